"""A ceiling for the verdict: how much concept information a whole stage holds, read by a linear probe.

A best single unit near the baselines can mean "no face neuron" or "no face information at all"; a held-out
logistic regression on all of a stage's units tells them apart. It is fitted on one stratified half of the
test set and scored on the other (the same halves as the single-unit protocol), both directions, averaged.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from catneuron.analysis.activations import UnitIndex, unit_activations
from catneuron.analysis.selectivity import stratified_halves
from catneuron.errors import UserError
from catneuron.model.network import Network

MAX_FEATURES = 10_000


def make_probe() -> Pipeline:
    """Standardized units into an L2-regularized logistic regression (scikit-learn's defaults otherwise)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def heldout_probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Fit on one stratified half, score on the other; the mean of both directions."""
    first, second = stratified_halves(labels, seed)
    if any(len(np.unique(labels[half])) < 2 for half in (first, second)):
        raise UserError(f"--probe: {int((labels == 1).sum())} positive(s) and {int((labels == 0).sum())} "
                        "negative(s); a held-out probe needs at least 2 images of each class, one per half")
    scores = [make_probe().fit(features[fit], labels[fit]).score(features[test], labels[test])
              for fit, test in ((first, second), (second, first))]
    return float(np.mean(scores))


def stage_features(network: Network, images: np.ndarray, max_features: int = MAX_FEATURES, seed: int = 0
                   ) -> list[tuple[np.ndarray, int]]:
    """Per stage: the responses of its units (a seeded random subset of `max_features` when it has more), and
    how many units the stage has."""
    index = UnitIndex(network)
    rng = np.random.default_rng([seed, 17])
    chosen = []
    for stage in range(1, len(network.stages) + 1):
        units = index.units_of_stage(stage)
        chosen.append((np.sort(rng.choice(units, max_features, replace=False)) if len(units) > max_features
                       else units, len(units)))
    batches = list(unit_activations(network, images, 512))
    return [(torch.cat([b[:, torch.as_tensor(units)] for b in batches]).numpy().astype(np.float64), n)
            for units, n in chosen]


def probe_record(network: Network, images: np.ndarray, labels: np.ndarray, seed: int = 0,
                 max_features: int = MAX_FEATURES) -> list[dict]:
    """Held-out probe accuracy of every stage of one network."""
    return [{"stage": stage, "heldout_accuracy": heldout_probe_accuracy(features, labels, seed),
             "n_units": n_units, "n_features": features.shape[1]}
            for stage, (features, n_units) in enumerate(stage_features(network, images, max_features, seed), 1)]


def probes(trained: Network, random: Network, images: np.ndarray, labels: np.ndarray, seed: int = 0,
           max_features: int = MAX_FEATURES) -> dict:
    """The probe per stage for the trained network and the random-weights one, side by side."""
    by_stage = [{"stage": t["stage"], "trained": t["heldout_accuracy"], "random_weights": r["heldout_accuracy"],
                 "n_units": t["n_units"], "n_features": t["n_features"]}
                for t, r in zip(probe_record(trained, images, labels, seed, max_features),
                                probe_record(random, images, labels, seed, max_features), strict=True)]
    return {"model": "standardized units, L2 logistic regression (C=1)",
            "protocol": "fitted on one stratified half, scored on the other; mean of both directions",
            "by_stage": by_stage}
