"""The paper's selectivity protocol, vectorized over neurons and streamed over the test set.

For every neuron: its min and max activation over the test set, 20 equally spaced thresholds
between them (both ends included), and the best accuracy of "concept if activation > threshold".
Two passes over the data: one for min/max, one for the threshold counts and a histogram of
activations per class, from which the ROC AUC (which the paper lacks) is computed: exactly when
values fall in distinct bins, with ties inside a bin credited 1/2 (the usual tie rule) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

N_THRESHOLDS = 20
AUC_BINS = 512


@dataclass
class Scan:
    """Per-neuron results of a scan; arrays of length n_units."""

    accuracy: np.ndarray
    threshold: np.ndarray
    auc: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_positive: int
    n_negative: int

    def best(self, units: np.ndarray | None = None) -> int:
        """Index of the most accurate unit (among `units` if given); ties go to the higher AUC."""
        units = np.arange(len(self.accuracy)) if units is None else units
        order = np.lexsort((-self.auc[units], -self.accuracy[units]))
        return int(units[order[0]])


Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def thresholds(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(N_THRESHOLDS, U): equally spaced from each unit's min to its max."""
    steps = torch.linspace(0, 1, N_THRESHOLDS, dtype=torch.float64).unsqueeze(1)
    return low.double() + steps * (high.double() - low.double())


def scan(batches: Batches) -> Scan:
    """`batches()` yields (activations (B, U), labels (B,) in {0, 1}); it is called twice."""
    low = high = None
    for acts, _ in batches():
        a_min, a_max = acts.min(0).values, acts.max(0).values
        low = a_min if low is None else torch.minimum(low, a_min)
        high = a_max if high is None else torch.maximum(high, a_max)
    if low is None:
        raise ValueError("empty test set")
    cuts = thresholds(low, high).T.contiguous()  # (U, T), sorted per unit
    units = low.shape[0]
    # below[c, u, i]: how many images of class c have exactly i of unit u's thresholds under them.
    below = torch.zeros(2, units, N_THRESHOLDS + 1, dtype=torch.float64)
    hist = torch.zeros(2, units, AUC_BINS, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    width = (high - low).double().clamp_min(1e-30)
    offsets = torch.arange(units).unsqueeze(1)
    for acts, labels in batches():
        labels = labels.long()
        for cls in (0, 1):
            a = acts[labels == cls].double().T.contiguous()  # (U, b)
            if not a.shape[1]:
                continue
            counts[cls] += a.shape[1]
            n_below = torch.searchsorted(cuts, a)  # thresholds strictly below each value
            _count(below[cls], n_below + offsets * (N_THRESHOLDS + 1))
            bins = ((a - low.double().unsqueeze(1)) / width.unsqueeze(1) * AUC_BINS).long().clamp_(0, AUC_BINS - 1)
            _count(hist[cls], bins + offsets * AUC_BINS)
    # above[c, k, u]: images of class c whose value exceeds threshold k = those with more than k below.
    above = below.flip(2).cumsum(2).flip(2)[:, :, 1:].transpose(1, 2)
    n_neg, n_pos = counts.tolist()
    correct = above[1] + (n_neg - above[0])  # true positives + true negatives, (T, U)
    best = correct.argmax(0)
    accuracy = correct.gather(0, best.unsqueeze(0))[0] / (n_neg + n_pos)
    return Scan(accuracy=accuracy.numpy(), threshold=cuts.T.gather(0, best.unsqueeze(0))[0].numpy(),
                auc=binned_auc(hist[1], hist[0]).numpy(), low=low.double().numpy(),
                high=high.double().numpy(), n_positive=int(n_pos), n_negative=int(n_neg))


def _count(table: torch.Tensor, flat_index: torch.Tensor) -> None:
    """table.view(-1)[i] += 1 for every i in flat_index (repeats counted)."""
    table.view(-1).index_add_(0, flat_index.reshape(-1), torch.ones(flat_index.numel(), dtype=table.dtype))


def binned_auc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """P(positive > negative) + P(same bin) / 2, from per-unit class histograms (U, bins)."""
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    neg_below = torch.cumsum(neg, 1) - neg
    wins = (pos * (neg_below + 0.5 * neg)).sum(1)
    return wins / (n_pos * n_neg).clamp_min(1)


def accuracy_at(values: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Accuracy of "concept if value > threshold"."""
    return float(((values > threshold) == (labels == 1)).mean())


def stratified_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the test set with the same class balance (indices, sorted)."""
    rng = np.random.default_rng([seed, 11])
    first, second = [], []
    for cls in (0, 1):
        index = rng.permutation(np.flatnonzero(labels == cls))
        first.append(index[: len(index) // 2])
        second.append(index[len(index) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
