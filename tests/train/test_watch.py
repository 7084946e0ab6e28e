"""The watch: records at the right image counts, a resumed curve without repeat or gap, the best checkpoint,
the budget that widens the interval."""

import numpy as np
import pytest

from catneuron.analysis import emergence
from catneuron.analysis.emergence import MIN_IMAGES, scan_network, subsample, watch_records
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.data.labelled import LabelledImages
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.store import checkpoint, runs
from catneuron.train import watch as watch_module
from catneuron.train.metrics import MetricsLog
from catneuron.train.trainer import Trainer
from catneuron.train.watch import Watch, WatchOptions, best_checkpoint_path


@pytest.fixture(scope="module")
def corpus() -> EmbeddedCorpus:
    return EmbeddedCorpus(size=16)


@pytest.fixture(scope="module")
def sets(corpus) -> list[tuple[str, LabelledImages]]:
    return [("faces", subsample(corpus.test_set(), 80))]


def watched(trainer: Trainer, sets, **options) -> Trainer:
    trainer.watch = Watch(sets, WatchOptions(n_filters=200, **options), say=lambda _: None)
    return trainer


def test_records_at_every_interval_the_start_and_the_end_none_past_it(corpus, sets, tmp_path):
    trainer = watched(Trainer(PRESETS["tiny"], corpus, tmp_path), sets, every_images=40, budget=1.0)
    trainer.fit(5, progress=False)  # batches of 20: 100 images
    rows = runs.read_rows(tmp_path)
    assert [r["images"] for r in watch_records(rows)] == [0, 40, 80, 100]
    assert [r["step"] for r in watch_records(rows)] == [0, 2, 4, 5]
    assert sum(r.get("record") == "watch_baselines" for r in rows) == 1
    base = next(r for r in rows if r.get("record") == "watch_baselines")["concepts"]["faces"]
    assert base["bar"] == pytest.approx(max(base["random_weights"], base["linear_filter"]) + 0.03)
    assert (base["n_positive"], base["n_negative"]) == (int(sets[0][1].labels.sum()), 80 - int(sets[0][1].labels.sum()))
    record = watch_records(rows)[-1]["concepts"]["faces"]
    assert [s["stage"] for s in record["stages"]] == [1, 2, 3]
    assert record["upper_heldout"] == max(s["heldout_accuracy"] for s in record["stages"][1:])
    assert all("loss" in r for r in runs.read_metrics(tmp_path))  # training rows apart from the watch's


def test_resume_continues_the_curve_without_repeat_or_gap(corpus, sets, tmp_path):
    watched(Trainer(PRESETS["tiny"], corpus, tmp_path), sets, every_images=60, budget=1.0).fit(4, progress=False)
    watched(Trainer.resume(tmp_path, corpus), sets, every_images=60, budget=1.0).fit(9, progress=False)
    rows = runs.read_rows(tmp_path)
    images = [r["images"] for r in rows if r.get("record") == "watch"]
    assert images == [0, 60, 80, 120, 180]  # 80: the first session's end; no second scan there on resume
    assert sum(r.get("record") == "watch_baselines" for r in rows) == 1  # the same watch set reuses them


def test_the_best_checkpoint_holds_the_highest_record(corpus, sets, tmp_path):
    trainer = watched(Trainer(PRESETS["tiny"], corpus, tmp_path), sets, every_images=20, budget=1.0)
    trainer.fit(8, progress=False)
    records = watch_records(runs.read_rows(tmp_path))
    values = [r["concepts"]["faces"]["upper_heldout"] for r in records]
    best = records[int(np.argmax(values))]
    ckpt = checkpoint.load(best_checkpoint_path(tmp_path))
    assert ckpt.extra["watch"] == best and ckpt.step == best["step"]
    network = Network(ckpt.config.model)
    network.load_state_dict(ckpt.model)
    assert scan_network(network.eval(), sets) == best["concepts"] | {
        "faces": {k: v for k, v in best["concepts"]["faces"].items() if k != "bar"}}


def test_the_budget_widens_the_interval_and_says_so_once(corpus, sets, tmp_path):
    said = []
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.watch = Watch(sets, WatchOptions(every_images=20, budget=0.001, n_filters=200), say=said.append)
    trainer.fit(6, progress=False)
    images = [r["images"] for r in watch_records(runs.read_rows(tmp_path))]
    assert images == [0, 120] and len(said) == 1  # the baselines alone are over budget: only the start and the end
    assert "the next scan waits (wider than asked)" in said[0] and "under 0.1% of the run's time" in said[0]


def test_without_an_interval_the_budget_sets_it(corpus, sets, tmp_path):
    said = []
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.watch = Watch(sets, WatchOptions(n_filters=200), say=said.append)
    trainer.fit(2, progress=False)
    cost = trainer.watch.scan_seconds[0]
    assert trainer.watch.every_seconds >= cost * 9 * (1 - 1e-9) and len(said) == 1 and "scanning every" in said[0]


class Clock:
    """The watch's clock in a test: seconds pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.slow
@pytest.mark.parametrize("every_images", [20, None])
def test_the_budget_counts_the_baselines(corpus, sets, tmp_path, monkeypatch, every_images):
    """Baselines of 10 s and scans of 1 s, 1 s of training per step of 20 images, a 10% budget: the first scan
    after the start waits until the baselines and the start scan (12 s with it) are 10% of the time, step 108."""
    clock = Clock()
    monkeypatch.setattr(watch_module, "time", clock)

    def costing(seconds, function):
        def timed(*args, **kwargs):
            clock.now += seconds
            return function(*args, **kwargs)
        return timed

    monkeypatch.setattr(watch_module, "baselines", costing(10.0, watch_module.baselines))
    monkeypatch.setattr(watch_module, "scan_network", costing(1.0, watch_module.scan_network))
    said = []
    watch = Watch(sets, WatchOptions(every_images=every_images, n_filters=200), say=said.append)
    network = Network(PRESETS["tiny"].model).eval()
    with MetricsLog(tmp_path) as metrics:
        watch.start(tmp_path, PRESETS["tiny"], "embedded", corpus, metrics, network, 0)
        for step in range(1, 400):
            clock.now += 1.0
            if watch.due(20 * step):
                watch.observe(network, 20 * step, step)
                assert watch.spent <= 0.1 * clock.now + 1e-9
    images = [r["images"] for r in watch_records(runs.read_rows(tmp_path))]
    assert images[:2] == [0, 108 * 20] and watch.spent == pytest.approx(10 + len(images)) and len(said) == 1
    if every_images:  # then every 9 s of training (10% of 10 s), rounded up to 180 images
        assert watch.every_images == 180 and images[2:4] == [117 * 20, 126 * 20]
        assert "the baselines and scans so far took 11.0 s: the next scan waits (wider than asked)" in said[0]
    else:
        assert watch.every_seconds == pytest.approx(9.0) and "scanning every 9 s of training" in said[0]


@pytest.mark.parametrize("options,message", [
    ({"every_images": 10, "every_seconds": 60}, "give one of them"),
    ({"every_images": 0}, "--watch-every 0"),
    ({"every_seconds": -60}, "--watch-minutes -1"),
    ({"every_seconds": float("nan")}, "--watch-minutes nan: must be a positive number"),  # NaN went into metrics
    ({"every_seconds": float("inf")}, "--watch-minutes inf: must be a positive number"),
    ({"budget": 0}, "--watch-budget 0"),
    ({"budget": 1}, "--watch-budget 1: give"),
])
def test_bad_options(options, message):
    with pytest.raises(UserError, match=message):
        WatchOptions(**options).validate()


def test_subsample_keeps_the_class_fraction():
    labels = np.array([1] * 30 + [0] * 70)
    cut = subsample(LabelledImages(np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1), labels), 20)
    assert len(cut.labels) == 20 and cut.labels.sum() == 6


def test_a_time_limit_cuts_the_watch_set_no_lower_than_the_minimum_and_a_resume_keeps_it(corpus, tmp_path):
    test = corpus.test_set()  # 284 images, three times over: 852
    full = [("faces", LabelledImages(np.concatenate([test.images] * 3), np.concatenate([test.labels] * 3)))]
    said = []
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.watch = Watch(full, WatchOptions(every_images=40, n_filters=200), say=said.append)
    trainer.fit(3, max_seconds=0.5, progress=False)
    base = next(r for r in runs.read_rows(tmp_path) if r.get("record") == "watch_baselines")["concepts"]["faces"]
    assert base["n_positive"] + base["n_negative"] == MIN_IMAGES == 400
    assert len(said) == 1 and "scanning 400 faces" in said[0] and "no fewer than 400 images" in said[0]
    resumed = Trainer.resume(tmp_path, corpus)
    resumed.watch = Watch(full, WatchOptions(every_images=40, n_filters=200), say=said.append)
    resumed.fit(4, max_seconds=600, progress=False)
    assert len(resumed.watch.sets[0][1].labels) == 400
    assert sum(r.get("record") == "watch_baselines" for r in runs.read_rows(tmp_path)) == 1


def test_resuming_with_another_watch_set_is_refused(corpus, sets, tmp_path):
    """The best score and checkpoint-best compare records of one watch set: a resume on another set was accepted and
    compared across the two; it is refused before a step, and the same set still resumes."""
    watched(Trainer(PRESETS["tiny"], corpus, tmp_path), sets, every_images=40, budget=1.0).fit(2, progress=False)
    before = (tmp_path / runs.METRICS).read_text()
    other = [("faces", subsample(corpus.test_set(), 60))]
    resumed = watched(Trainer.resume(tmp_path, corpus), other, every_images=40, budget=1.0)
    with pytest.raises(UserError, match="--watch: this run was watched on another watch set"):
        resumed.fit(4, progress=False)
    assert (tmp_path / runs.METRICS).read_text() == before and resumed.step == 2
    watched(Trainer.resume(tmp_path, corpus), sets, every_images=40, budget=1.0).fit(4, progress=False)
    assert [r["images"] for r in watch_records(runs.read_rows(tmp_path))] == [0, 40, 80]


def test_a_watch_set_below_the_minimum_says_its_standard_error(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(emergence, "concept_sets", lambda *_, **__: [("faces", corpus.test_set())])
    said = []
    sets = emergence.watch_sets([("faces", "F")], "N", 16, 1, limit=112, say=said.append)
    assert len(sets[0][1].labels) == 112 and len(said) == 2 and "scanning 112 of 284 images" in said[0]
    assert "faces: 112 images give the held-out accuracy a standard error of up to 4.7 points, over the " \
        "2.5-point bound (400 images)" in said[1]
    said.clear()
    emergence.watch_sets([("faces", "F")], "N", 16, 1, limit=1000, say=said.append)
    assert "284 images give" in said[0] and len(said) == 1


def test_the_untrained_network_is_never_the_best_checkpoint(corpus, sets, tmp_path, monkeypatch):
    """A watch set on which the start scores highest (as noise on 112 images made it today): checkpoint-best
    holds the best trained point, not step 0."""
    real, calls = watch_module.scan_network, []

    def falling(network, watch_sets, seed=0):
        concepts = real(network, watch_sets, seed)
        concepts["faces"]["upper_heldout"] = [0.9, 0.6, 0.7, 0.65][len(calls)]
        calls.append(1)
        return concepts

    monkeypatch.setattr(watch_module, "scan_network", falling)
    trainer = watched(Trainer(PRESETS["tiny"], corpus, tmp_path), sets, every_images=40, budget=1.0)
    trainer.fit(6, progress=False)
    records = watch_records(runs.read_rows(tmp_path))
    assert [r["images"] for r in records] == [0, 40, 80, 120]
    ckpt = checkpoint.load(best_checkpoint_path(tmp_path))
    assert ckpt.step == 4 and ckpt.extra["watch"]["images"] == 80


def test_the_progress_field_is_percent_and_marked_stale_between_scans(corpus, sets, tmp_path):
    trainer = watched(Trainer(PRESETS["tiny"], corpus, tmp_path), sets, every_images=40, budget=1.0)
    trainer.fit(2, progress=False)  # scans at 0 and 40 images
    watch = trainer.watch
    value = watch.latest["concepts"]["faces"]["upper_heldout"]
    fresh = f"{100 * value:.1f}% (bar {100 * watch.base['faces']['bar']:.1f}%)"
    assert watch.fields(40) == {"faces s2/3": fresh}
    assert watch.fields(60) == {"faces s2/3": fresh + " @40"}
