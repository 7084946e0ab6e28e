"""TensorBoard event files written as a run trains, read back with tensorboard's own reader; W&B only when asked."""

import sys
import types

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catneuron.analysis.emergence import subsample, watch_records
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.store import runs
from catneuron.train.events import Events, crc32c
from catneuron.train.trainer import Trainer
from catneuron.train.watch import Watch, WatchOptions


def read(run) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C (Castagnoli)


def test_a_watched_run_writes_what_metrics_jsonl_holds(tmp_path):
    corpus = EmbeddedCorpus(size=16)
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    trainer.watch = Watch([("faces", subsample(corpus.test_set(), 80))],
                          WatchOptions(every_images=40, budget=1.0, n_filters=100), say=lambda _: None)
    trainer.fit(10, progress=False)  # log_every 5: rows at steps 5 and 10
    events = read(tmp_path)
    tags = set(events.Tags()["scalars"])
    rows = runs.read_metrics(tmp_path)
    for key in ("loss", "recon_1", "sparsity_3"):
        got = events.Scalars(f"objective/{key}")
        assert [e.step for e in got] == [r["step"] for r in rows] == [5, 10]
        assert [e.value for e in got] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert [e.value for e in events.Scalars("train/images_per_s")] == pytest.approx(
        [r["images_per_s"] for r in rows], rel=1e-6)
    records = watch_records(runs.read_rows(tmp_path))
    for stage in (1, 2, 3):
        got = events.Scalars(f"watch/faces/stage{stage}_heldout")
        assert [e.step for e in got] == [r["step"] for r in records]
        assert [e.value for e in got] == pytest.approx(
            [r["concepts"]["faces"]["stages"][stage - 1]["heldout_accuracy"] for r in records], rel=1e-6)
    assert {"watch/faces/upper_heldout", "watch/faces/bar", "watch/faces/linear_filter"} <= tags


def test_wandb_only_when_asked(tmp_path, monkeypatch):
    logged, started = [], []
    fake = types.SimpleNamespace(init=lambda **kw: started.append(kw) or types.SimpleNamespace(
        log=lambda values, step: logged.append((step, values)), finish=lambda: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with Events(tmp_path / "off") as events:
        events.add({"step": 1, "loss": 2.0})
    assert started == [] and logged == []  # nothing sent unless asked
    with Events(tmp_path / "on", wandb="study", config={"preset": "tiny"}) as events:
        events.add({"step": 3, "loss": 2.0, "recon_1": 1.5})
    assert started[0]["project"] == "study" and started[0]["config"] == {"preset": "tiny"}
    assert logged == [(3, {"objective/loss": 2.0, "objective/recon_1": 1.5})]
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: import fails
    with pytest.raises(UserError, match="--wandb: W&B is not installed"):
        Events(tmp_path / "missing", wandb="study")
