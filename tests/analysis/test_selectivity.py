"""The streamed threshold scan against plain loops, AUC against the rank definition and scikit-learn, the
held-out protocol, and the linear filters scanned block by block against one block."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from catneuron.analysis.baselines import chance, filter_blocks, image_rows
from catneuron.analysis.evaluate import BYTES_PER_UNIT, SCAN_BYTES, block_size, scan_linear
from catneuron.analysis.selectivity import GRID, N_THRESHOLDS, Layout, scan, stratified_halves


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


def streamed(acts: np.ndarray, layout: Layout, size: int = 7):
    """Batches of at most `size` images, group by group, as evaluate streams them."""
    def batches():
        for group, index in layout.spans(size):
            yield torch.as_tensor(acts[index]), group
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
    layout = Layout(labels)
    result = scan(streamed(acts, layout), layout.counts()).full
    for u in range(acts.shape[1]):
        acc, t = direct(acts[:, u].astype(np.float64), labels)
        assert result.accuracy[u] == pytest.approx(acc)
        assert result.threshold[u] == pytest.approx(t, abs=1e-6)
        assert result.auc[u] == pytest.approx(rank_auc(acts[:, u], labels), abs=1 / GRID)
    assert result.auc[3] == pytest.approx(rank_auc(acts[:, 3], labels), abs=1e-12)  # ties share a bin: exact
    assert result.accuracy[5] == 1.0 and result.auc[5] == 1.0
    assert result.auc[4] == 0.0
    assert result.accuracy[2] == pytest.approx(1 - labels.mean())  # constant: never above its own max
    assert result.best() == 5


def test_heldout_equals_the_protocol_written_plainly():
    """Each half's pick, at that half's threshold, scored on the other half; and any batch size gives the same."""
    rng = np.random.default_rng(3)
    labels = (rng.random(400) < 0.352).astype(np.int64)
    acts = (rng.normal(size=(400, 30)) + labels[:, None] * rng.random(30)).astype(np.float32)
    layout = Layout(labels, seed=4)
    scored = scan(streamed(acts, layout, size=13), layout.counts())
    halves = stratified_halves(labels, seed=4)
    for h, (pick, other) in enumerate((halves, halves[::-1])):
        for u in range(30):
            acc, t = direct(acts[pick, u].astype(np.float64), labels[pick])
            assert scored.halves[h].accuracy[u] == pytest.approx(acc)
            assert scored.halves[h].transfer[u] == pytest.approx(np.mean((acts[other, u] > t) == (labels[other] == 1)))
    subset = np.arange(10, 20)
    heldout, (a, b) = scored.heldout(subset)
    assert a in subset and b in subset and a == scored.halves[0].best(subset)
    assert heldout == pytest.approx((scored.halves[0].transfer[a] + scored.halves[1].transfer[b]) / 2)
    at_once = scan(streamed(acts, layout, size=400), layout.counts())
    for mine, theirs in zip((scored.full, *scored.halves), (at_once.full, *at_once.halves), strict=True):
        for field in ("accuracy", "threshold", "auc", "low", "high"):
            np.testing.assert_array_equal(getattr(mine, field), getattr(theirs, field))


def test_binned_auc_is_close_to_scikit_learn():
    rng = np.random.default_rng(5)
    labels = (rng.random(3000) < 0.35).astype(np.int64)
    acts = (rng.normal(size=(3000, 8)) * rng.random(8) * 10 + labels[:, None] * np.linspace(0, 2, 8)).astype(
        np.float32)
    layout = Layout(labels)
    auc = scan(streamed(acts, layout, size=500), layout.counts()).full.auc
    reference = [roc_auc_score(labels, acts[:, u]) for u in range(8)]
    np.testing.assert_allclose(auc, reference, atol=2e-3)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_sets(label):
    acts = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    labels = np.full(10, label)
    layout = Layout(labels)
    result = scan(streamed(acts, layout), layout.counts()).full
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
    layout = Layout(labels, seed=3)
    assert sorted(layout.order) == list(range(86)) and np.array_equal(layout.counts(), [[28, 15], [28, 15]])


def test_chance_is_the_majority_class_named():
    assert chance(np.array([1, 0, 0, 0]), "faces") == {"id": "always 'not faces'", "accuracy": 0.75,
                                                       "majority": "negative"}
    more_faces = chance(np.array([1] * 521 + [0] * 479), "faces")
    assert more_faces["accuracy"] == pytest.approx(0.521) and more_faces["id"] == "always 'faces'"


def test_filter_blocks_hold_one_block_and_read_lazily():
    read = []

    def batches():
        for i in range(100):
            read.append(i)
            yield torch.rand(7, 1, 4, 4)

    blocks = filter_blocks(batches(), count=30, block=4)
    first = next(blocks)
    assert first.shape == (4, 16) and len(read) == 1  # one training batch read for the first block
    sizes = [4] + [len(b) for b in blocks]
    assert sizes == [4] * 7 + [2] and len(read) == 5  # 30 filters: five batches of 7, no more
    assert block_size(37_000) * (4 * 37_000 + BYTES_PER_UNIT) <= SCAN_BYTES
    assert block_size(10**9) == 1


def test_linear_filters_block_by_block_equal_one_block_and_find_the_planted_template():
    """Among random filters, the one equal to the positives' template is the most selective; scanning them
    in blocks of 4 keeps the same best filter, threshold, AUC and held-out score as scanning all at once."""
    rng = np.random.default_rng(2)
    template = rng.normal(size=(1, 8, 8)).astype(np.float32)
    noise = [rng.normal(size=(1, 8, 8)).astype(np.float32) for _ in range(20)]
    training = torch.as_tensor(np.stack(noise[:10] + [template] + noise[10:]))
    pos = template + 0.3 * rng.normal(size=(15, 1, 8, 8))
    neg = rng.normal(size=(30, 1, 8, 8))
    images = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.array([1] * 15 + [0] * 30)
    layout = Layout(labels)
    leaders = [scan_linear(filter_blocks([training[:7], training[7:]], 21, block), image_rows(images), layout, 21,
                           "linear", progress=False) for block in (4, 21)]
    (blocked, n_blocked), (whole, n_whole) = leaders
    assert n_blocked == n_whole == 21
    for mine, theirs in zip([blocked.full, *blocked.halves], [whole.full, *whole.halves], strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5)  # a matmul's rounding depends on the block's shape
    record = blocked.record("training image", n_filters=21)
    assert record["id"] == "training image 10" and record["accuracy"] == 1.0 and record["heldout_accuracy"] > 0.9
