"""The whole Table 1 for a corpus: the network and the paper's comparison models, trained and scanned alike.

Rows: random guess, random weights, best linear filter, best first-stage neuron, best neuron (and
its held-out accuracy), the no-LCN network, a locally connected deep autoencoder with sigmoid units,
K-means centroids, and the same network trained on a corpus with the faces removed. Every model is
trained with the same number of steps, so the comparison is of the same budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from catneuron.analysis.kmeans import fit_centroids, kmeans_record
from catneuron.analysis.run_evaluation import evaluate_run
from catneuron.data.labelled import LabelledImages
from catneuron.data.sources import open_source
from catneuron.model.config import Config, validate
from catneuron.store import files

# train(config, data, out, steps) -> out: trains or resumes a run folder to `steps` steps.
TrainFn = Callable[[Config, str, Path, int], Path]

VARIANTS: dict[str, dict] = {
    "no_lcn": {"lcn": False},
    "sigmoid_ae": {"encoder": "sigmoid", "sparsity": 0.0},
}


def variant_config(config: Config, name: str) -> Config:
    return validate(dataclasses.replace(config, model=dataclasses.replace(config.model, **VARIANTS[name])))


def best_record(result: dict) -> dict:
    return result["best_neuron"] | {"heldout_accuracy": result["heldout_accuracy"]}


def build_table(out: Path, config: Config, data: str, control_data: str | None,
                concepts: list[tuple[str, LabelledImages]], steps: int, train: TrainFn, n_filters: int = 100_000,
                n_centroids: int = 1000, kmeans_images: int = 20_000, null_seeds: int = 5,
                device: str | torch.device = "cpu") -> dict:
    """Train the models into out/<name>/ with `train` (the caller's trainer: analysis knows none), scan each
    for every concept on `device`, write out/table.json. The main network gets the null of `null_seeds`
    random networks and the per-stage probes."""
    models = {"network": config} | {name: variant_config(config, name) for name in VARIANTS}
    trained = {name: train(cfg, data, out / name, steps) for name, cfg in models.items()}
    if control_data:
        trained["no_faces"] = train(config, control_data, out / "no_faces", steps)
    model = config.model
    side = max(8, model.input_size // 2)
    batches = open_source(data, model.input_size, model.channels).batches(500, seed=54321)
    centroids = fit_centroids(batches, kmeans_images, n_centroids, side)
    table: dict[str, dict] = {}
    for concept, test in concepts:
        main = evaluate_run(trained["network"], test, concept, n_filters, null_seeds=null_seeds, probe=True,
                            device=device)
        row = {"network": main, "kmeans": kmeans_record(centroids, test, side)}
        for name, run in trained.items():
            if name != "network":
                row[name] = best_record(evaluate_run(run, test, concept, n_filters=1000, device=device))
        table[concept] = row
    summary = {"steps": steps, "data": data, "control_data": control_data, "concepts": table}
    files.write_json(out / "table.json", summary)
    return summary
