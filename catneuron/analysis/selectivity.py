"""The paper's selectivity protocol, vectorized over units and streamed over the test set in two passes.

For every unit: its min and max activation over the test set, 20 equally spaced thresholds between them
(both ends included), and the best accuracy of "concept if activation > threshold". The held-out protocol
repeats the scan on two stratified halves and scores each half's pick, at its threshold, on the other half.

Memory does not grow with the number of images: pass 1 keeps each unit's min and max per half, pass 2
counts values into histograms on a fine grid of GRID bins between the min and the max whose edges include
the 20 thresholds (GRID = 19 * 27), so threshold counts are exact sums of bins and the ROC AUC (which the
paper lacks) comes from the same histogram: exact when values fall in distinct bins, otherwise pairs in one
bin count 1/2 (off by at most half the share of positive-negative pairs that share a bin; tests/analysis
checks it against scikit-learn). The same pass counts each half's images on the other half's 20
thresholds, which is all the held-out score needs, for any unit that turns out to be picked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from catneuron.errors import UserError

N_THRESHOLDS = 20
PER_STEP = 27  # fine bins between two thresholds
GRID = (N_THRESHOLDS - 1) * PER_STEP  # bin 0 holds values at the min; bins 1..GRID the rest
THREADS = torch.get_num_threads()  # counting threads, each on its own units
# (activations (B, U) of images all in one group, group number = 2 * half + label); called once per pass.
Batches = Callable[[], Iterable[tuple[torch.Tensor | np.ndarray, int]]]


@dataclass
class Scan:
    """Per-unit results of the protocol on one image set; arrays of length n_units."""

    accuracy: np.ndarray
    threshold: np.ndarray
    auc: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_positive: int
    n_negative: int
    transfer: np.ndarray | None = None  # a half's scan: accuracy on the other half at this half's threshold

    def best(self, units: np.ndarray | None = None) -> int:
        """Index of the most accurate unit (among `units` if given); ties go to the higher AUC, then the lower index."""
        units = np.arange(len(self.accuracy)) if units is None else np.asarray(units)
        order = np.lexsort((-self.auc[units], -self.accuracy[units]))
        return int(units[order[0]])

    def transferred(self, unit: int) -> float:
        """A half's scan: `unit`'s accuracy on the other half at this half's threshold."""
        assert self.transfer is not None, "only a half's scan has a transfer"
        return float(self.transfer[unit])


@dataclass
class Scored:
    """A population scanned on the whole test set and on each stratified half."""

    full: Scan
    halves: tuple[Scan, Scan]

    def heldout(self, units: np.ndarray | None = None) -> tuple[float, tuple[int, int]]:
        """Unit and threshold chosen on one half (among `units`), scored on the other; the mean of both
        directions, so the number does not hang on one split. Returns it with the two chosen units."""
        picks = [half.best(units) for half in self.halves]
        accuracy = np.mean([half.transferred(unit) for half, unit in zip(self.halves, picks, strict=True)])
        return float(accuracy), (picks[0], picks[1])


class Layout:
    """The test set ordered by (half, label): every group a contiguous run of positions in `order`."""

    def __init__(self, labels: np.ndarray, seed: int = 0) -> None:
        labels = np.asarray(labels).astype(np.int64)
        if len(labels) < 2:
            raise ValueError("the test set needs at least 2 images")
        halves = stratified_halves(labels, seed)
        self.groups = [halves[h][labels[halves[h]] == c] for h in (0, 1) for c in (0, 1)]
        self.order = np.concatenate(self.groups)
        self.labels = labels

    def counts(self) -> np.ndarray:
        """(half, label) -> number of images."""
        return np.array([len(g) for g in self.groups], dtype=np.float64).reshape(2, 2)

    def spans(self, size: int) -> Iterable[tuple[int, np.ndarray]]:
        """(group, original image indices) in chunks of at most `size`, group by group."""
        for group, index in enumerate(self.groups):
            for start in range(0, len(index), size):
                yield group, index[start:start + size]


def _count(table: np.ndarray, values: np.ndarray, low: np.ndarray, scale: np.ndarray, top: int) -> None:
    """Add `values` (U, B) into `table` (U * (top + 1) bins): on each unit's grid, bin 0 holds values at or below
    `low` and bin ceil((v - low) * scale) the others, up to `top`. Unit-major, so one unit's bins stay in cache
    (numpy: its broadcasting arithmetic is many times faster than torch's on this shape)."""
    bins = values - low[:, None]
    np.multiply(bins, scale[:, None], out=bins)
    np.ceil(bins, out=bins)
    np.clip(bins, 0, top, out=bins)
    index = bins.astype(np.int64)
    index += (np.arange(len(values), dtype=np.int64) * (top + 1))[:, None]
    table += np.bincount(index.ravel(), minlength=table.size)


class _Tally:
    """Counts of one pass 2: per label, fine histograms on the whole set's grid and on each half's grid, and
    coarse (threshold) histograms of each half's images on the other half's grid."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low = low.astype(np.float32)  # (3, U): whole set, half 0, half 1
        with np.errstate(divide="ignore"):
            span = high.astype(np.float64) - low
            self.fine = np.minimum(GRID / span, 1e30).astype(np.float32)
            self.coarse = np.minimum((N_THRESHOLDS - 1) / span, 1e30).astype(np.float32)
        units = low.shape[1]
        self.whole = np.zeros((2, units * (GRID + 1)), dtype=np.int64)
        self.own = np.zeros((2, 2, units * (GRID + 1)), dtype=np.int64)
        self.cross = np.zeros((2, 2, units * (N_THRESHOLDS + 1)), dtype=np.int64)

    def add(self, acts: np.ndarray, group: int, pool: ThreadPoolExecutor) -> None:
        """Count a batch of one group, units split among the pool's threads (numpy releases the GIL)."""
        half, label = divmod(group, 2)
        values = np.ascontiguousarray(acts.T)
        other = 2 - half
        grids = [(self.whole[label], 0, self.fine, GRID), (self.own[half, label], 1 + half, self.fine, GRID),
                 (self.cross[half, label], other, self.coarse, N_THRESHOLDS)]
        cuts = np.linspace(0, len(values), THREADS + 1).astype(int)
        jobs = [pool.submit(_count, table[a * (top + 1):b * (top + 1)], values[a:b], self.low[grid, a:b],
                            scale[grid, a:b], top)
                for table, grid, scale, top in grids for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
        for job in jobs:
            job.result()


def _above(hist: np.ndarray, step: int) -> torch.Tensor:
    """(2, U, bins) histograms -> (2, T, U): values above each threshold (thresholds at bins 0, step, 2 step...;
    bins past the last threshold, if any, hold values above it)."""
    inner = 1 + (N_THRESHOLDS - 1) * step
    blocks = hist[:, :, 1:inner].reshape(*hist.shape[:2], N_THRESHOLDS - 1, step).sum(3)  # between thresholds
    tail = np.zeros((*hist.shape[:2], N_THRESHOLDS), dtype=np.float64)
    tail[:, :, :-1] = blocks[:, :, ::-1].cumsum(2)[:, :, ::-1]  # above threshold k: blocks k and up
    tail += hist[:, :, inner:].sum(2, keepdims=True)
    return torch.from_numpy(tail.transpose(0, 2, 1))


def _scan(hist: np.ndarray, low: np.ndarray, high: np.ndarray, n: np.ndarray) -> tuple[Scan, torch.Tensor]:
    """The protocol from one grid's histograms (2 labels, U, GRID + 1); returns the scan and each unit's best k."""
    n_neg, n_pos = float(n[0]), float(n[1])
    above = _above(hist, PER_STEP)
    correct = above[1] + (n_neg - above[0])  # true positives + true negatives, (T, U)
    best = correct.argmax(0)
    cuts = thresholds(torch.from_numpy(low), torch.from_numpy(high))
    auc = binned_auc(hist[1], hist[0])
    return Scan(accuracy=(correct.gather(0, best[None])[0] / max(n_neg + n_pos, 1)).numpy(),
                threshold=cuts.gather(0, best[None])[0].numpy(), auc=auc, low=low.astype(np.float64),
                high=high.astype(np.float64), n_positive=int(n_pos), n_negative=int(n_neg)), best


def thresholds(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(N_THRESHOLDS, U): equally spaced from each unit's min to its max."""
    steps = torch.linspace(0, 1, N_THRESHOLDS, dtype=torch.float64).unsqueeze(1)
    return low.double() + steps * (high.double() - low.double())


def scan(batches: Batches, counts: np.ndarray) -> Scored:
    """The protocol on the whole set and on each half; `counts` is Layout.counts(). `batches()` runs twice."""
    low = high = None
    for acts, group in batches():  # pass 1: each unit's range on each half
        acts = np.asarray(acts)
        if low is None or high is None:
            low = np.full((2, acts.shape[1]), np.inf, dtype=np.float32)
            high = np.full((2, acts.shape[1]), -np.inf, dtype=np.float32)
        half = group // 2
        np.minimum(low[half], acts.min(0), out=low[half])
        np.maximum(high[half], acts.max(0), out=high[half])
    if low is None or high is None:
        raise ValueError("empty test set")
    filled = counts.sum(1) > 0  # a half without images keeps low = inf, high = -inf
    if not (np.isfinite(low[filled]).all() and np.isfinite(high[filled]).all()):
        raise UserError("the network's activations are not finite numbers (NaN or overflow: are its weights far "
                        "too large?); nothing can be measured on it")
    low = np.concatenate([low.min(0, keepdims=True), low])
    high = np.concatenate([high.max(0, keepdims=True), high])
    empty = ~np.isfinite(low)  # a half without images
    low[empty], high[empty] = 0, 0
    tally = _Tally(low, high)
    with ThreadPoolExecutor(THREADS) as pool:
        for acts, group in batches():  # pass 2: histograms
            tally.add(np.asarray(acts), group, pool)
    units = low.shape[1]
    full, _ = _scan(tally.whole.reshape(2, units, GRID + 1), low[0], high[0], counts.sum(0))
    halves = []
    for half in (0, 1):
        own, best = _scan(tally.own[half].reshape(2, units, GRID + 1), low[1 + half], high[1 + half], counts[half])
        other = 1 - half
        above = _above(tally.cross[other].reshape(2, units, N_THRESHOLDS + 1), 1)
        above = above.gather(1, best[None, None].expand(2, 1, units))[:, 0]
        n_neg, n_pos = counts[other]
        own.transfer = ((above[1] + n_neg - above[0]) / max(n_neg + n_pos, 1)).numpy()
        halves.append(own)
    return Scored(full, (halves[0], halves[1]))


def binned_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """P(positive > negative) + P(same bin) / 2, from per-unit class histograms (U, bins) of counts."""
    neg_below = np.cumsum(neg, 1) - neg
    wins2 = (pos * (2 * neg_below + neg)).sum(1)  # twice the wins, in integers
    return wins2 / (2.0 * np.maximum(pos.sum(1) * neg.sum(1), 1))


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
