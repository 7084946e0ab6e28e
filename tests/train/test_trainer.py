"""The single-process trainer: learning on real images, checkpoints, exact resume."""

import json
import logging
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from catneuron.data.embedded import EmbeddedCorpus
from catneuron.data.sources import ArraySource
from catneuron.model.config import PRESETS, replace
from catneuron.store import checkpoint, runs
from catneuron.train.trainer import Diverged, Trainer


@pytest.fixture(scope="module")
def corpus() -> EmbeddedCorpus:
    return EmbeddedCorpus(size=16)


@pytest.mark.slow
def test_training_lowers_the_objective_on_real_images(corpus, tmp_path):
    config = replace(PRESETS["tiny"], train={"batch_size": 50})
    trainer = Trainer(config, corpus, tmp_path / "run")
    fixed = next(corpus.batches(200, seed=99))
    with torch.no_grad():
        before = float(trainer.network.loss(trainer.network(fixed)))
    trainer.fit(150, progress=False)
    with torch.no_grad():
        after = float(trainer.network.loss(trainer.network(fixed)))
    assert after < 0.8 * before


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_resume_continues_exactly(corpus, tmp_path, optimizer):
    config = replace(PRESETS["tiny"], train={"optimizer": optimizer, "lr": 0.01, "log_every": 1,
                                             "checkpoint_every": 1000})
    straight = Trainer(config, corpus, tmp_path / "straight")
    straight.fit(12, progress=False)
    first = Trainer(config, corpus, tmp_path / "resumed")
    first.fit(7, progress=False)
    second = Trainer.resume(tmp_path / "resumed", corpus)
    assert second.step == 7
    second.fit(12, progress=False)
    a = [json.loads(x) for x in (tmp_path / "straight" / runs.METRICS).read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "resumed" / runs.METRICS).read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 13))
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-6)
    for (name, p), q in zip(straight.network.named_parameters(), second.network.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    config = PRESETS["tiny"]
    source = ArraySource(np.random.default_rng(0).integers(0, 255, (30, 1, 16, 16), dtype=np.uint8), "random")
    trainer = Trainer(config, source, tmp_path)
    trainer.fit(3, progress=False)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"
    ckpt = checkpoint.load(runs.checkpoint_path(tmp_path))
    assert ckpt.step == 3 and ckpt.config == config
    assert checkpoint.read_config(runs.checkpoint_path(tmp_path)) == config
    net, _ = runs.load_network(tmp_path)
    for (name, p), q in zip(net.named_parameters(), trainer.network.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    runs.checkpoint_path(tmp_path).write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="not a readable checkpoint"):
        runs.load_network(tmp_path)


def test_a_checkpoint_of_the_old_filter_layout_is_refused(tmp_path):
    """Version-1 checkpoints ordered each filter's fan-in (channel, row, column): loading them now would
    silently scramble every filter."""
    path = runs.checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(1)}, str(path), metadata={"format": "catneuron-checkpoint/1"})
    with pytest.raises(Exception, match="train it again"):
        runs.load_network(tmp_path)


def test_max_seconds_stops_early_with_a_checkpoint(corpus, tmp_path):
    trainer = Trainer(PRESETS["tiny"], corpus, tmp_path)
    result = trainer.fit(10**6, max_seconds=0.5, progress=False)
    assert result.stopped_early and 0 < result.step < 10**6
    assert checkpoint.load(runs.checkpoint_path(tmp_path)).step == result.step


class Poisoned:
    """The embedded corpus, until a batch of NaN (or one that interrupts) at step `at` (1-based)."""

    def __init__(self, corpus: EmbeddedCorpus, at: int, fault: str = "nan") -> None:
        self.corpus, self.at, self.fault, self.description = corpus, at, fault, "poisoned"

    def batches(self, batch_size: int, seed: int, start_step: int = 0):
        for step, batch in enumerate(self.corpus.batches(batch_size, seed, start_step), start=start_step + 1):
            if step == self.at and self.fault == "interrupt":
                raise KeyboardInterrupt
            yield torch.full_like(batch, float("nan")) if step == self.at else batch


def test_a_non_finite_objective_stops_training_and_keeps_the_last_finite_checkpoint(corpus, tmp_path):
    config = replace(PRESETS["tiny"], train={"checkpoint_every": 4, "log_every": 1})
    trainer = Trainer(config, Poisoned(corpus, at=7), tmp_path / "run", data_spec="embedded")
    with pytest.raises(Diverged, match=r"step 7: the objective is not finite \(recon_1 nan.*; training stopped: "
                                       r".*checkpoint.safetensors holds step 6, the last finite one"):
        trainer.fit(20, progress=False)
    ckpt = checkpoint.load(runs.checkpoint_path(tmp_path / "run"))
    assert ckpt.step == 6 and checkpoint.non_finite(ckpt.model) is None
    assert [row["step"] for row in runs.read_metrics(tmp_path / "run")] == list(range(1, 7))


def test_resume_truncates_metrics_to_the_checkpoint(corpus, tmp_path):
    config = replace(PRESETS["tiny"], train={"checkpoint_every": 1000, "log_every": 1})
    Trainer(config, corpus, tmp_path / "run").fit(5, progress=False)
    with open(tmp_path / "run" / runs.METRICS, "a") as metrics:  # a crash after logging steps 6, 7, not saving
        metrics.write('{"step": 6, "loss": 1.0}\n{"step": 7, "loss": 1.0}\n{"step": 8, "lo')
    Trainer.resume(tmp_path / "run", corpus).fit(9, progress=False)
    assert [row["step"] for row in runs.read_metrics(tmp_path / "run")] == list(range(1, 10))


def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(corpus, tmp_path, caplog):
    trainer = Trainer(PRESETS["tiny"], Poisoned(corpus, at=4, fault="interrupt"), tmp_path / "run",
                      data_spec="embedded")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(10, progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and re.fullmatch(
        r"catneuron: interrupted at step 3: checkpoint .*checkpoint.safetensors; continue with "
        r"`catneuron train --resume --out '.*run' --data 'embedded'`", warned[0])
    assert checkpoint.load(runs.checkpoint_path(tmp_path / "run")).step == 3

def test_precision_bf16_trains_with_bfloat16_operands(corpus, tmp_path):
    config = replace(PRESETS["tiny"], train={"precision": "bf16", "batch_size": 20})
    trainer = Trainer(config, corpus, tmp_path / "run")
    assert trainer.network.stages[0].encoder.operand_dtype == torch.bfloat16
    terms = trainer.fit(3, progress=False).last
    assert np.isfinite(terms["loss"]) and trainer.network.stages[0].encoder.weight.dtype == torch.float32
