"""A watched run in the report and in evaluate: the emergence figure drawn from the records, the verdict at the
best point and at the end."""

import json

import pytest

from catneuron.analysis.emergence import emergence_verdict, latest_baselines, subsample, watch_records, wilson
from catneuron.analysis.plots import emergence_curves
from catneuron.analysis.run_evaluation import evaluate_run
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.model.config import PRESETS
from catneuron.report.site import write_report
from catneuron.store import runs
from catneuron.train.trainer import Trainer
from catneuron.train.watch import Watch, WatchOptions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    corpus = EmbeddedCorpus(size=16)
    folder = tmp_path_factory.mktemp("watched")
    trainer = Trainer(PRESETS["tiny"], corpus, folder, data_spec="embedded")
    trainer.watch = Watch([("faces", subsample(corpus.test_set(), 80))],
                          WatchOptions(every_images=40, budget=1.0, n_filters=200), say=lambda _: None)
    trainer.fit(6, progress=False)
    return folder


def raw_rows(run):
    return [json.loads(line) for line in (run / runs.METRICS).read_text().splitlines()]


def test_the_figure_draws_the_records_numbers(run, tmp_path):
    rows = raw_rows(run)
    drawn = emergence_curves(rows, tmp_path / "e.png")["faces"]
    records = [r for r in rows if r.get("record") == "watch"]
    base = next(r for r in rows if r.get("record") == "watch_baselines")["concepts"]["faces"]
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    for stage in (1, 2, 3):
        xs, ys = zip(*drawn[f"stage {stage}"], strict=True)
        assert list(xs) == [r["images"] for r in records]
        assert list(ys) == pytest.approx([100 * r["concepts"]["faces"]["stages"][stage - 1]["heldout_accuracy"]
                                          for r in records])
        bands = drawn[f"stage {stage} 95% interval"]
        assert [x for x, _, _ in bands] == list(xs)
        heldout = [r["concepts"]["faces"]["stages"][stage - 1]["heldout_accuracy"] for r in records]
        assert [v for _, low, high in bands for v in (low, high)] == pytest.approx(
            [100 * bound for v in heldout for bound in wilson(v, 80)], abs=1e-3)
    for key, label in (("random_weights", "random weights"), ("linear_filter", "best linear filter"),
                       ("bar", "bar (better baseline + 3 points)"), ("random_guess", "random guess")):
        assert [y for _, y in drawn[label]] == pytest.approx([100 * base[key]] * 2)
    assert emergence_curves([r for r in rows if "record" not in r], tmp_path / "none.png") == {}
    assert not (tmp_path / "none.png").exists()


def test_the_verdict_at_the_best_point_and_at_the_end(run):
    rows = raw_rows(run)
    records = watch_records(rows)
    verdict = emergence_verdict(records, latest_baselines(rows), "faces")
    values = [r["concepts"]["faces"]["upper_heldout"] for r in records]
    trained = values[1:]  # the untrained network (0 images) is never the best point
    assert verdict["best"]["upper_heldout"] == max(trained)
    assert verdict["best"]["images"] == records[1 + trained.index(max(trained))]["images"]
    assert ("the untrained network (0 images) scored higher" in verdict["text"]) == (values[0] > max(trained))
    assert verdict["end"]["images"] == 120 and verdict["end"]["upper_heldout"] == values[-1]
    assert verdict["end"]["above_bar"] == (values[-1] >= verdict["bar"])
    low, high = wilson(values[-1], 80)
    assert (f"(120 images) the best stage-2/3 unit reaches {100 * values[-1]:.1f}% held-out (95% "
            f"interval {100 * low:.1f}-{100 * high:.1f}% on 80 images)") in verdict["text"]
    assert emergence_verdict(records, None, "cats") is None


@pytest.mark.slow
def test_report_and_evaluate_show_the_watch(run):
    result = evaluate_run(run, EmbeddedCorpus(size=16).test_set(), "faces", n_filters=100)
    assert (run / result["figures"]["emergence"]).is_file()
    assert result["emergence"]["end"]["images"] == 120
    index = write_report(run)
    html = index.read_text()
    assert "Watched during training" in html and 'id="watch"' in html
    assert (index.parent / "emergence.png").is_file() and 'src="emergence.png"' in html
    summary = html[html.index('id="summary"'):html.index("</section>", html.index('id="summary"'))]
    assert "at its best point" in summary and "(120 images)" in summary
    assert "figures/emergence.png" not in html  # drawn afresh, not repeated among the run's other figures
