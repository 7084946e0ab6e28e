"""The report's evidence section: per stage, the best unit against the null over random networks and the probe
trained against random weights, from a real `evaluate --null-seeds 2 --probe` result."""

import json

import pytest
import reportkit as kit

from catneuron.analysis.run_evaluation import evaluate_run
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.model.config import PRESETS
from catneuron.report import write_report
from catneuron.train.trainer import Trainer

pytestmark = pytest.mark.slow  # a real evaluate (with the null and the probe) per module: ~10 s on 2 busy cores


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    corpus = EmbeddedCorpus(size=16)
    run = tmp_path_factory.mktemp("evidence") / "run"
    Trainer(PRESETS["tiny"], corpus, run, data_spec="embedded").fit(3, progress=False)
    result = evaluate_run(run, corpus.test_set(), "faces", n_filters=100, null_seeds=2, probe=True)
    return run, result


def test_the_null_and_the_probe_per_stage_are_in_the_index(evaluated):
    run, result = evaluated
    index = write_report(run)
    html = index.read_text()
    section = kit.parse(index).find("section", id="concept-faces")
    rows = kit.table_rows(section.find("table", class_="evidence"))
    assert len(rows) == 3
    for cells, best, null, probe in zip(rows, result["best_by_stage"], result["null"]["by_stage"],
                                        result["probe"]["by_stage"], strict=True):
        text = [c.text() for c in cells]
        assert text[:3] == [str(best["stage"]), best["id"], f"{100 * best['heldout_accuracy']:.1f}"]
        assert text[3:6] == [f"{100 * null['null']['mean']:.1f}", f"{100 * null['null']['sd']:.1f}",
                             f"{100 * null['null']['max']:.1f}"]
        above = null["sd_above_mean"]
        assert text[6:8] == ["no spread" if above is None else f"{above:+.1f}", "yes" if null["beats_max"] else "no"]
        assert text[8:] == [f"{100 * probe['trained']:.1f}", f"{100 * probe['random_weights']:.1f}"]
    assert "Null: the best unit of each stage of 2 random-weights networks" in html and "probe random (%)" in html
    headline = kit.parse(index).find("section", id="summary").text()
    assert result["verdict"]["controls_text"] in headline  # the sentence evaluate printed, in the verdict line


def test_a_result_without_controls_says_how_to_compute_them(evaluated, tmp_path):
    run, result = evaluated
    copy = kit.copy_run(run, tmp_path / "run")
    bare = {k: v for k, v in result.items() if k not in ("null", "probe")}
    (copy / "results" / "faces.json").write_text(json.dumps(bare))
    section = kit.parse(write_report(copy)).find("section", id="concept-faces").text()
    assert "No null over random networks and no probe" in section and "--null-seeds 5 --probe" in section


def test_hostile_values_in_the_controls_stay_text(evaluated, tmp_path):
    run, result = evaluated
    copy = kit.copy_run(run, tmp_path / "run")
    hostile = json.loads(json.dumps(result))
    hostile["best_by_stage"][0]["id"] = "<script>alert(1)</script>"
    hostile["null"]["by_stage"][1]["null"] = "<img src=x>"  # malformed: not an object
    hostile["probe"]["by_stage"][2]["trained"] = "<b>"
    hostile["verdict"]["controls_text"] = "<i>text</i>"
    (copy / "results" / "faces.json").write_text(json.dumps(hostile))
    html = write_report(copy).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x>" not in html and "<i>text</i>" not in html and "&lt;i&gt;text&lt;/i&gt;" in html
