"""The threshold scan against a direct loop, AUC against the rank definition, the held-out split."""

import numpy as np
import pytest
import torch

from catneuron.analysis.baselines import filter_responses, random_guess, sample_filters
from catneuron.analysis.selectivity import N_THRESHOLDS, scan, stratified_halves


def direct(values: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The paper's protocol for one neuron, written plainly."""
    lo, hi = values.min(), values.max()
    best_acc, best_t = -1.0, None
    for k in range(N_THRESHOLDS):
        t = lo + (hi - lo) * k / (N_THRESHOLDS - 1)
        acc = np.mean((values > t) == (labels == 1))
        if acc > best_acc:
            best_acc, best_t = acc, t
    return best_acc, best_t


def rank_auc(values: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = values[labels == 1], values[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def batched(acts: np.ndarray, labels: np.ndarray, size: int = 7):
    def batches():
        for s in range(0, len(acts), size):
            yield torch.as_tensor(acts[s:s + size]), torch.as_tensor(labels[s:s + size])
    return batches


def constructed() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random(60) < 0.35).astype(np.int64)
    cols = [
        rng.normal(size=60) + 2 * labels,                  # a selective unit
        rng.normal(size=60),                               # noise
        np.full(60, 3.0),                                  # constant
        np.round(rng.normal(size=60) + labels, 0),         # many ties
        -labels.astype(float),                             # anti-selective
        labels.astype(float),                              # perfect
    ]
    return np.stack(cols, 1).astype(np.float32), labels


def test_scan_equals_direct_loop_and_rank_auc():
    acts, labels = constructed()
    result = scan(batched(acts, labels))
    for u in range(acts.shape[1]):
        acc, t = direct(acts[:, u].astype(np.float64), labels)
        assert result.accuracy[u] == pytest.approx(acc)
        assert result.threshold[u] == pytest.approx(t, abs=1e-6)
        assert result.auc[u] == pytest.approx(rank_auc(acts[:, u], labels), abs=1e-9)
    assert result.accuracy[5] == 1.0 and result.auc[5] == 1.0
    assert result.auc[4] == 0.0
    assert result.accuracy[2] == pytest.approx(1 - labels.mean())  # constant: never above its own max
    assert result.best() == 5


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_sets(label):
    acts = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    labels = np.full(10, label)
    result = scan(batched(acts, labels))
    for u in range(3):
        assert result.accuracy[u] == pytest.approx(direct(acts[:, u].astype(np.float64), labels)[0])
    # All negative: the top threshold (the max) rejects everything. All positive: the lowest one
    # (the min) still rejects the minimum itself, as the paper's "> threshold" rule implies.
    assert np.all(result.accuracy == (1.0 if label == 0 else 0.9))
    assert result.n_positive == 10 * label and result.n_negative == 10 * (1 - label)


def test_halves_are_disjoint_stratified_and_deterministic():
    labels = np.array([1] * 30 + [0] * 56)
    a, b = stratified_halves(labels, seed=3)
    assert not set(a) & set(b) and len(a) + len(b) == 86
    assert labels[a].sum() == 15 and labels[b].sum() == 15
    a2, _ = stratified_halves(labels, seed=3)
    assert np.array_equal(a, a2)


def test_random_guess_is_the_majority_rate():
    assert random_guess(np.array([1, 0, 0, 0])) == 0.75


def test_linear_filter_baseline_finds_the_planted_template():
    """Among random filters, the one equal to the positives' template is the most selective."""
    rng = np.random.default_rng(2)
    template = rng.normal(size=(1, 8, 8)).astype(np.float32)
    noise = [rng.normal(size=(1, 8, 8)).astype(np.float32) for _ in range(20)]
    training = torch.as_tensor(np.stack(noise[:10] + [template] + noise[10:]))
    filters = sample_filters([training[:7], training[7:]], count=21)
    assert filters.shape == (21, 64)
    pos = template + 0.3 * rng.normal(size=(15, 1, 8, 8))
    neg = rng.normal(size=(30, 1, 8, 8))
    images = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.array([1] * 15 + [0] * 30)
    result = scan(lambda: ((r, torch.as_tensor(labels[i * 16:(i + 1) * 16]))
                           for i, r in enumerate(filter_responses(filters, images, batch_size=16))))
    assert result.best() == 10 and result.accuracy[10] == 1.0
