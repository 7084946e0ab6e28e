"""Evaluating a run folder: load its network and training data, scan a concept, write JSON and figures."""

from __future__ import annotations

import io
from collections.abc import Sized
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from catneuron.analysis import figures
from catneuron.analysis.activations import UnitIndex, unit_activations
from catneuron.analysis.concepts import concept_slug
from catneuron.analysis.controls import add_controls
from catneuron.analysis.emergence import emergence_verdict, latest_baselines, watch_records
from catneuron.analysis.evaluate import SUBLAYER_CODES, evaluate
from catneuron.analysis.plots import emergence_curves, training_curves
from catneuron.data.labelled import LabelledImages
from catneuron.data.sources import open_source
from catneuron.errors import UserError
from catneuron.model.network import Network, NeuronId
from catneuron.store import files, runs


def neuron_values(network: Network, images: np.ndarray, neurons: list[str], batch_size: int = 256) -> np.ndarray:
    """The activations of a few neurons over an image set in one pass of the network, (N, len(neurons))."""
    index = UnitIndex(network)
    columns = [index.unit(NeuronId.parse(n)) for n in neurons]
    return torch.cat([acts[:, columns] for acts in unit_activations(network, images, batch_size)]).numpy()


def write_figures(run: Path, network: Network, test: LabelledImages, result: dict) -> dict[str, str]:
    """Histogram and top stimuli of the best neuron and of the best of each stage (result["neuron_figures"]),
    every stage's filters, training curves; paths relative to run."""
    out = runs.figures_dir(run)
    slug, concept = concept_slug(result["concept"]), result["concept"]
    records = {r["id"]: r for r in [result["best_neuron"], *result["best_by_stage"]]}
    values = neuron_values(network, test.images, list(records))
    made: dict[str, Path] = {}
    result["neuron_figures"] = {}
    for column, (neuron, rec) in enumerate(records.items()):
        stem = slug if neuron == result["best_neuron"]["id"] else f"{slug}_{concept_slug(neuron)}"
        v = values[:, column]
        top = np.argsort(-v, kind="stable")[:24]
        pictures = {
            "histogram": figures.histogram(v, test.labels, rec["threshold"], f"{neuron}: {concept} vs distractors",
                                           concept, out / f"{stem}_histogram.png"),
            "top_stimuli": figures.image_grid(test.images[top], out / f"{stem}_top_stimuli.png",
                                              f"top stimuli of {neuron} in the test set (green frame: {concept})",
                                              marked=test.labels[top] == 1),
        }
        result["neuron_figures"][neuron] = {k: str(p.relative_to(run)) for k, p in pictures.items()}
        if neuron == result["best_neuron"]["id"]:
            made |= pictures
    made["filters"] = figures.filters(network, out / "filters.png")
    if training_curves(runs.read_metrics(run), out / "training_curves.png"):
        made["training_curves"] = out / "training_curves.png"
    if emergence_curves(runs.read_rows(run), out / "emergence.png"):
        made["emergence"] = out / "emergence.png"
    return {name: str(path.relative_to(run)) for name, path in made.items()}


def write_unit_scores(path: Path, scores: dict[str, np.ndarray]) -> dict:
    """Every unit's scores as a compressed .npz of plain arrays (np.load(path) reads it, no pickle), and the
    JSON that describes it."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **scores)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
    files.write_atomic(path, buffer.getvalue())
    return {"file": f"results/{path.name}", "units": int(len(scores["accuracy"])), "columns": list(scores),
            "sublayer_codes": list(SUBLAYER_CODES),
            "read_with": f"numpy.load('{path.name}') (plain arrays, one entry per unit in network order)"}


def evaluate_run(run: str | Path, test: LabelledImages, concept: str, n_filters: int = 100_000,
                 training_data: str | None = None, json_path: str | Path | None = None,
                 inputs: dict | None = None, null_seeds: int = 0, probe: bool = False,
                 checkpoint: str | Path = "last", device: str | torch.device = "cpu", say=print) -> dict:
    """Scan the run's network (the `checkpoint` chosen: last, best or a path) for `concept`; write
    results/<concept>.json, every unit's scores (results/<concept>_units.npz), figures, and `json_path`.

    The result records what it was computed from (`inputs`: test folders, subsampling, plus the checkpoint
    and its step, training data, number of linear filters and date), so a later evaluation cannot pass for
    it. `null_seeds` random-weights networks and the per-stage `probe` add the null and the ceiling
    (analysis.controls)."""
    run = Path(run)
    network, ckpt = runs.load_network(run, device, checkpoint)
    data = training_data or runs.training_data(run)
    model = network.config
    try:
        source = open_source(data, model.input_size, model.channels)
    except UserError as e:
        raise UserError(f"linear-filter baseline needs the run's training data: {e}") from None
    distinct = len(source) if isinstance(source, Sized) else None
    if distinct is not None and n_filters > distinct:
        say(f"linear filters: {n_filters:,} asked of {distinct:,} training images: each image is tried about "
            f"{n_filters / distinct:.0f} times (randomly mirrored), so at most {2 * distinct:,} of the filters "
            "differ (--linear-filters)")
    scores: dict = {}
    result = evaluate(network, test, concept, source.batches(500, seed=12345), n_filters=n_filters, scores=scores)
    result["unit_scores"] = write_unit_scores(runs.results_dir(run) / f"{concept_slug(concept)}_units.npz", scores)
    result["inputs"] = (inputs or {}) | {
        "checkpoint": str(runs.chosen_checkpoint(run, checkpoint)), "checkpoint_step": ckpt.step,
        "training_data": str(data), "linear_filters": n_filters, "linear_filter_images": distinct,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    add_controls(result, network, test, null_seeds, probe)
    rows = runs.read_rows(run)
    watched = emergence_verdict(watch_records(rows), latest_baselines(rows), concept)
    if watched:
        result["emergence"] = watched
    result["figures"] = write_figures(run, network, test, result)
    files.write_json(runs.results_dir(run) / f"{concept_slug(concept)}.json", result)
    if json_path:
        files.write_json(json_path, result)
    return result
