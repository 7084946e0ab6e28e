"""Evaluating a run folder: load its network and training data, scan a concept, write JSON and figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from catneuron.analysis import figures
from catneuron.analysis.concepts import ratio_subsample
from catneuron.analysis.controls import add_controls
from catneuron.analysis.emergence import emergence_verdict, latest_baselines, watch_records
from catneuron.analysis.evaluate import evaluate
from catneuron.analysis.stimuli import responses
from catneuron.data.images import read_folder
from catneuron.data.labelled import LabelledImages
from catneuron.data.sources import open_source
from catneuron.errors import UserError
from catneuron.model.network import Network, NeuronId
from catneuron.report.plots import emergence_curves, training_curves
from catneuron.store import files, runs


def concept_slug(concept: str) -> str:
    """A file-name-safe form of a user's concept name."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", concept).strip("_")
    return slug or "concept"


def concept_sets(concepts: list[tuple[str, str]], negatives: str, size: int, channels: int
                 ) -> list[tuple[str, LabelledImages]]:
    """One labelled set per concept against the shared distractors, at the model's size and channels.

    The first concept (the face set) keeps every image and sets the positive:negative ratio; the
    others are subsampled to the same ratio, as the paper does for cats and bodies.
    """
    neg = _read(negatives, "--negatives", size, channels)
    sets, ratio = [], None
    for name, folder in concepts:
        pos = _read(folder, "--positives", size, channels)
        if ratio is None:
            ratio = len(neg) / len(pos)
            keep_pos, keep_neg = np.arange(len(pos)), np.arange(len(neg))
        else:
            keep_pos, keep_neg = ratio_subsample(len(pos), len(neg), ratio)
        images = np.concatenate([pos[keep_pos], neg[keep_neg]]).astype(np.float32) / 255.0
        labels = np.array([1] * len(keep_pos) + [0] * len(keep_neg), dtype=np.int64)
        sets.append((name, LabelledImages(images, labels)))
    return sets


def _read(folder: str, flag: str, size: int, channels: int) -> np.ndarray:
    """Grey and colour both accepted: converted to the model's channels and resized to its input."""
    found = read_folder(folder, size, channels, flag=flag)
    if found.skipped:
        print(f"catneuron: {flag} {folder}: skipped {len(found.skipped)} unreadable image(s)")
    return found.images


def write_figures(run: Path, network: Network, test: LabelledImages, result: dict) -> dict[str, str]:
    """Histogram and top stimuli of the best neuron, stage-1 filters, training curves; paths relative to run."""
    out = runs.figures_dir(run)
    slug = concept_slug(result["concept"])
    best = result["best_neuron"]
    values = responses(network, test.images, NeuronId.parse(best["id"])).numpy()
    made = {
        "histogram": figures.histogram(values, test.labels, best["threshold"],
                                       f"{best['id']}: {result['concept']} vs distractors", result["concept"],
                                       out / f"{slug}_histogram.png"),
        "top_stimuli": figures.image_grid(test.images[np.argsort(-values)[:24]], out / f"{slug}_top_stimuli.png",
                                          f"top stimuli of {best['id']} in the test set"),
        "filters": figures.first_stage_filters(network, out / "stage1_filters.png"),
    }
    if training_curves(runs.read_metrics(run), out / "training_curves.png"):
        made["training_curves"] = out / "training_curves.png"
    if emergence_curves(runs.read_rows(run), out / "emergence.png"):
        made["emergence"] = out / "emergence.png"
    return {name: str(path.relative_to(run)) for name, path in made.items()}


def evaluate_run(run: str | Path, test: LabelledImages, concept: str, n_filters: int = 100_000,
                 training_data: str | None = None, json_path: str | Path | None = None, null_seeds: int = 0,
                 probe: bool = False) -> dict:
    """Scan the run's network for `concept`; write results/<concept>.json, figures, and `json_path` if given.
    `null_seeds` random-weights networks and the per-stage `probe` add the null and the ceiling (analysis.controls)."""
    run = Path(run)
    network, _ = runs.load_network(run)
    data = training_data or json.loads((run / runs.CONFIG).read_text())["data"]
    model = network.config
    try:
        source = open_source(data, model.input_size, model.channels)
    except UserError as e:
        raise UserError(f"linear-filter baseline needs the run's training data: {e}") from None
    result = evaluate(network, test, concept, source.batches(500, seed=12345), n_filters=n_filters)
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
