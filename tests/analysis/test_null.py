"""The null of the best unit per stage against a direct computation: plain numpy thresholds, rank AUC, halves."""

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from catneuron.analysis.null import check_null_seeds, null_distribution, standing
from catneuron.analysis.selectivity import N_THRESHOLDS, stratified_halves
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.train.trainer import Trainer


def stage_values(network: Network, images: np.ndarray, stage: int) -> np.ndarray:
    with torch.no_grad():
        acts = network.eval().activations(torch.as_tensor(images))
    return np.concatenate([a.reshape(len(images), -1).numpy() for (s, _), a in acts.items() if s == stage],
                          axis=1).astype(np.float64)


def direct_best_heldout(values: np.ndarray, labels: np.ndarray) -> float:
    """Best unit and threshold on one half (accuracy, then rank AUC), scored on the other; both ways, averaged."""
    first, second = stratified_halves(labels)
    scores = []
    for pick, test in ((first, second), (second, first)):
        v, y = values[pick], labels[pick]
        low, high = v.min(0), v.max(0)
        cuts = low + np.linspace(0, 1, N_THRESHOLDS)[:, None] * (high - low)  # (T, U)
        correct = ((v[None] > cuts[:, None, :]) == (y[None, :, None] == 1)).mean(1)
        ranks = rankdata(v, axis=0)
        n_pos, n_neg = (y == 1).sum(), (y == 0).sum()
        auc = (ranks[y == 1].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        unit = np.lexsort((-auc, -correct.max(0)))[0]
        threshold = cuts[correct[:, unit].argmax(), unit]
        scores.append(np.mean((values[test, unit] > threshold) == (labels[test] == 1)))
    return float(np.mean(scores))


@pytest.mark.slow
def test_null_of_three_random_networks_matches_a_direct_computation(tmp_path):
    corpus = EmbeddedCorpus(size=16)
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.fit(5, progress=False)
    test = corpus.test_set()
    labels = test.labels.astype(np.int64)
    trained = [direct_best_heldout(stage_values(trainer.network, test.images, s), labels) for s in (1, 2, 3)]
    null = null_distribution(trainer.network.config, test.images, labels, 3, trained)
    assert null["seeds"] == [1, 2, 3]
    draws = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        net = Network(PRESETS["tiny"].model)
        draws.append([direct_best_heldout(stage_values(net, test.images, s), labels) for s in (1, 2, 3)])
    draws = np.array(draws)  # (seeds, stages)
    for stage, row in enumerate(null["by_stage"], start=1):
        column = draws[:, stage - 1]
        assert row["stage"] == stage
        assert row["null"]["values"] == pytest.approx(column.tolist())
        assert row["null"]["mean"] == pytest.approx(column.mean())
        assert row["null"]["sd"] == pytest.approx(column.std(ddof=1))
        assert row["null"]["max"] == pytest.approx(column.max())
        assert row["trained"] == trained[stage - 1]
        assert row["beats_max"] == (trained[stage - 1] > column.max())
        if column.std() > 0:
            assert row["sd_above_mean"] == pytest.approx((trained[stage - 1] - column.mean()) / column.std(ddof=1))


def test_standing_without_spread_and_the_seed_count_check():
    flat = {"values": [0.6, 0.6], "mean": 0.6, "sd": 0.0, "max": 0.6}
    assert standing(0.7, flat) == {"trained": 0.7, "sd_above_mean": None, "beats_max": True}
    assert check_null_seeds(0) == 0 and check_null_seeds(5) == 5
    for bad in (1, -2):
        with pytest.raises(UserError, match="--null-seeds"):
            check_null_seeds(bad)


def test_the_number_of_null_networks_is_bounded_and_their_scan_shows_progress(capsys):
    """--null-seeds 1000 ran about a minute without a word and had no upper bound."""
    with pytest.raises(UserError, match=r"--null-seeds 1000: 0 \(none\) or 2 to 100 random networks"):
        check_null_seeds(1000)
    assert check_null_seeds(100) == 100
    corpus = EmbeddedCorpus(size=16)
    test = corpus.test_set()
    null_distribution(PRESETS["tiny"].model, test.images[:30], test.labels[:30], 2, [0.5, 0.5, 0.5])
    err = capsys.readouterr().err
    assert "null: random networks 2/2" in err
