"""The null and the probe added to an evaluate result, and the verdict sentence they write."""

import pytest

from catneuron.analysis.controls import add_controls, controls_text
from catneuron.analysis.evaluate import evaluate
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.model.config import PRESETS
from catneuron.train.trainer import Trainer


@pytest.mark.slow
def test_add_controls_extends_the_result_and_the_verdict(tmp_path):
    corpus = EmbeddedCorpus(size=16)
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.fit(3, progress=False)
    test = corpus.test_set()
    result = evaluate(trainer.network.eval(), test, "faces", corpus.batches(100, seed=1), n_filters=100)
    before = result["verdict"]["text"]
    add_controls(result, trainer.network, test, null_seeds=2, probe=True)
    assert result["null"]["seeds"] == [1, 2] and len(result["probe"]["by_stage"]) == 3
    assert [r["trained"] for r in result["null"]["by_stage"]] == [r["heldout_accuracy"]
                                                                  for r in result["best_by_stage"]]
    text = result["verdict"]["text"]
    assert text.startswith(before) and text.endswith(result["verdict"]["controls_text"])
    stage = next(r["stage"] for r in result["best_by_stage"] if r["id"] == result["verdict"]["upper_neuron"])
    probe = result["probe"]["by_stage"][stage - 1]
    assert f"stage-{stage} probe" in text and f"{100 * probe['trained']:.1f}%" in text
    null = result["null"]["by_stage"][stage - 1]["null"]
    assert f"mean best of 2 random networks ({100 * null['mean']:.1f}%" in text


def test_no_controls_no_sentence():
    assert controls_text({"best_by_stage": [{"stage": 1, "id": "s1.pool.m0.y0.x0"}], "verdict": {}}) == ""
