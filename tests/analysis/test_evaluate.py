"""evaluate() on a tiny trained network: the JSON contract, and labels never reaching the trainer."""

import numpy as np
import pytest
import torch

from catneuron.analysis.evaluate import evaluate
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.model.config import PRESETS
from catneuron.train.trainer import Trainer


@pytest.fixture(scope="module")
def corpus() -> EmbeddedCorpus:
    return EmbeddedCorpus(size=16)


def test_evaluate_writes_the_documented_fields(corpus, tmp_path):
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.fit(5, progress=False)
    test = corpus.test_set()
    result = evaluate(trainer.network.eval(), test, "faces",
                      corpus.batches(100, seed=1), n_filters=300)
    assert result["n_positive"] == 100 and result["n_negative"] == 184
    for key in ("id", "stage", "sublayer", "accuracy", "threshold", "auc"):
        assert key in result["best_neuron"]
    assert [r["stage"] for r in result["best_by_stage"]] == [1, 2, 3]
    assert max(r["accuracy"] for r in result["best_by_stage"]) == result["best_neuron"]["accuracy"]
    assert result["baselines"]["best_first_stage"] == result["best_by_stage"][0]["accuracy"]
    assert result["baselines"]["random_guess"] == pytest.approx(184 / 284)
    for value in list(result["baselines"].values()) + [result["heldout_accuracy"]]:
        assert 0 <= value <= 1
    assert result["baselines_detail"]["linear_filter"]["n_filters"] == 300
    for rec in result["best_by_stage"]:
        assert 0 <= rec["heldout_accuracy"] <= 1
    v = result["verdict"]
    bar = max(result["baselines_detail"]["random_weights"]["heldout_accuracy"],
              result["baselines_detail"]["linear_filter"]["heldout_accuracy"])
    upper = max(result["best_by_stage"][1:], key=lambda r: r["heldout_accuracy"])
    assert v["upper_neuron"] == upper["id"] and v["baseline_heldout_accuracy"] == bar
    assert v["margin"] == pytest.approx(upper["heldout_accuracy"] - bar)
    assert v["emerged"] == (v["margin"] >= 0.03) and ("No high-level neuron" in v["text"]) != v["emerged"]
    accs = [r["accuracy"] for r in result["top_neurons"]]
    assert accs == sorted(accs, reverse=True) and accs[0] == result["best_neuron"]["accuracy"]


def test_labels_never_reach_the_trainer(tmp_path):
    """Training is a function of the unlabeled stream alone: scrambling every label changes no weight."""
    weights = []
    for scramble in (False, True):
        corpus = EmbeddedCorpus(size=16)
        if scramble:  # what a label leak would feed on: the test labels and the face/non-face split
            rng = np.random.default_rng(0)
            corpus.test_set = lambda *a, **k: (_ for _ in ()).throw(AssertionError("trainer read the test set"))
            corpus.test_faces = rng.permutation(corpus.test_faces)
            corpus.test_nonfaces = rng.permutation(corpus.test_nonfaces)
        trainer = Trainer(PRESETS["tiny"], corpus, tmp_path / str(scramble))
        trainer.fit(4, progress=False)
        weights.append([p.detach().clone() for p in trainer.network.parameters()])
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b)
    batch = next(EmbeddedCorpus(size=16).batches(10, seed=0))
    assert isinstance(batch, torch.Tensor) and batch.shape == (10, 1, 16, 16)


def test_verdict_says_when_a_high_level_neuron_beats_the_baselines():
    from catneuron.analysis.evaluate import verdict

    stages = [{"id": "s1.filter.m0.y0.x0", "stage": 1, "heldout_accuracy": 0.9},
              {"id": "s2.pool.m1.y0.x0", "stage": 2, "heldout_accuracy": 0.85},
              {"id": "s3.pool.m0.y0.x0", "stage": 3, "heldout_accuracy": 0.70}]
    base = {"random_weights": {"heldout_accuracy": 0.78}, "linear_filter": {"heldout_accuracy": 0.80}}
    v = verdict(stages, base)
    assert v["emerged"] and v["upper_neuron"] == "s2.pool.m1.y0.x0" and v["margin"] == pytest.approx(0.05)
    base["linear_filter"]["heldout_accuracy"] = 0.83
    assert not verdict(stages, base)["emerged"]
