"""The stage probe against scikit-learn fitted by hand on the same stratified halves."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from catneuron.analysis.probe import heldout_probe_accuracy, probes, stage_features
from catneuron.analysis.selectivity import stratified_halves
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.model.network import Network


def by_hand(features: np.ndarray, labels: np.ndarray) -> float:
    first, second = stratified_halves(labels)
    scores = []
    for fit, test in ((first, second), (second, first)):
        scaler = StandardScaler().fit(features[fit])
        model = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(features[fit]), labels[fit])
        scores.append(np.mean(model.predict(scaler.transform(features[test])) == labels[test]))
    return float(np.mean(scores))


@pytest.mark.slow
def test_probe_accuracy_equals_scikit_learn_on_the_same_split():
    test = EmbeddedCorpus(size=16).test_set()
    labels = test.labels.astype(np.int64)
    torch.manual_seed(3)
    trained, random = Network(PRESETS["tiny"].model).eval(), Network(PRESETS["tiny"].model).eval()
    result = probes(trained, random, test.images, labels)
    with torch.no_grad():
        acts = trained.activations(torch.as_tensor(test.images))
    for row in result["by_stage"]:
        features = np.concatenate([a.reshape(len(labels), -1).numpy() for (s, _), a in acts.items()
                                   if s == row["stage"]], axis=1).astype(np.float64)
        assert row["n_units"] == row["n_features"] == features.shape[1]
        assert row["trained"] == pytest.approx(by_hand(features, labels))
        assert 0.5 <= row["random_weights"] <= 1
    assert [r["stage"] for r in result["by_stage"]] == [1, 2, 3]


def test_a_stage_wider_than_the_cap_is_probed_on_a_seeded_subset():
    test = EmbeddedCorpus(size=16).test_set()
    net = Network(PRESETS["tiny"].model).eval()
    (first, n_units), *_ = stage_features(net, test.images[:40], max_features=50)
    again, _ = stage_features(net, test.images[:40], max_features=50)[0]
    assert first.shape == (40, 50) and n_units > 50 and np.array_equal(first, again)


def test_a_separable_feature_gives_a_perfect_probe():
    labels = np.array([0, 1] * 20)
    features = np.column_stack([labels + 0.01 * np.arange(40), np.zeros(40)])
    assert heldout_probe_accuracy(features, labels) == 1.0


def test_a_class_too_small_for_two_halves_is_one_line():
    """One positive: one half holds no positive, and scikit-learn's ValueError was a traceback."""
    features = np.random.default_rng(0).normal(size=(9, 4))
    labels = np.array([1] + [0] * 8)
    with pytest.raises(UserError, match=r"--probe: 1 positive\(s\) and 8 negative\(s\); a held-out probe needs at "
                                        "least 2 images of each class"):
        heldout_probe_accuracy(features, labels)
