"""The null for "best unit of a stage": how good the best of thousands of units is when no training happened.

One random-weights network is a single draw of a noisy maximum; `S` of them, with different seeds and scanned
with the same code and held-out protocol as the trained network, give that maximum's distribution per stage.
The trained network's best unit is then placed in it: standard deviations above the null's mean, and whether it
beats the null's maximum.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from catneuron.analysis.activations import UnitIndex
from catneuron.analysis.evaluate import scan_network
from catneuron.analysis.selectivity import Layout
from catneuron.errors import UserError
from catneuron.model.config import ModelConfig
from catneuron.model.network import Network
from catneuron.progress import Progress


def random_network(config: ModelConfig, seed: int, device: torch.device | str = "cpu") -> Network:
    """The random-weights network of seed `seed`: what `evaluate`'s random-weights baseline draws with seed 1."""
    torch.manual_seed(seed)
    return Network(config).to(device).eval()


def best_heldout_by_stage(network: Network, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[float]:
    """Held-out accuracy of each stage's best unit (chosen on one half, scored on the other), stage order."""
    index = UnitIndex(network)
    scored = scan_network(network, images, Layout(labels.astype(np.int64), seed), "random-weights network",
                          progress=False)
    return [scored.heldout(index.units_of_stage(stage))[0] for stage in range(1, len(network.stages) + 1)]


def summary(values: list[float]) -> dict:
    """Mean, sample standard deviation and maximum of the null draws, with the draws."""
    array = np.asarray(values, dtype=np.float64)
    return {"values": array.tolist(), "mean": float(array.mean()), "sd": float(array.std(ddof=1)),
            "max": float(array.max())}


def standing(trained: float, null: dict) -> dict:
    """Where the trained value falls in the null: sd above its mean (None when the draws do not vary)."""
    above = (trained - null["mean"]) / null["sd"] if null["sd"] > 0 else None
    return {"trained": trained, "sd_above_mean": above, "beats_max": trained > null["max"]}


MAX_SEEDS = 100  # each is a whole scan; 100 draws place a maximum to within a few percent of its spread


def check_null_seeds(seeds: int) -> int:
    """`--null-seeds`: 0 (no null) or 2 (a standard deviation needs two) to MAX_SEEDS networks; checked before
    training."""
    if seeds < 0 or seeds == 1 or seeds > MAX_SEEDS:
        raise UserError(f"--null-seeds {seeds}: 0 (none) or 2 to {MAX_SEEDS} random networks")
    return seeds


def null_distribution(config: ModelConfig, images: np.ndarray, labels: np.ndarray, seeds: int,
                      trained_by_stage: list[float], seed: int = 0, device: torch.device | str = "cpu",
                      progress: bool = True) -> dict:
    """Scan `seeds` random-weights networks (seeds seed+1 .. seed+S) and place the trained network's best unit
    of each stage (`trained_by_stage`: held-out accuracies) against the distribution of theirs."""
    if check_null_seeds(seeds) == 0:
        raise UserError("--null-seeds 0: no random networks to scan")
    meter = Progress(seeds, "null: random networks", progress)
    started, draws = time.monotonic(), []
    for k in range(seeds):
        draws.append(best_heldout_by_stage(random_network(config, seed + 1 + k, device), images, labels, seed))
        meter.update(k + 1, (k + 1) / max(time.monotonic() - started, 1e-9), "networks", final=k + 1 == seeds)
    stages = []
    for stage, trained in enumerate(trained_by_stage, start=1):
        null = summary([draw[stage - 1] for draw in draws])
        stages.append({"stage": stage, "null": null} | standing(trained, null))
    return {"seeds": [seed + 1 + k for k in range(seeds)], "statistic": "held-out accuracy of the stage's best unit",
            "by_stage": stages}
