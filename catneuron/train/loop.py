"""The bookkeeping around a training loop, written once for the three ways of training (the single-process
trainer, a rank of a model-parallel replica, the Downpour driver): the run folder's config and metrics, the
log and checkpoint cadence, the progress line and its time left, the watch's start and end, the time limit,
stop signals, and the checkpoint written on the way out, whatever the way out.

A trainer's loop is then only its own step:

    with Session(trainer, steps, max_seconds) as session:
        while trainer.step < session.steps:
            terms = trainer.train_step(batch)       # or a Downpour replica's chunk, step by step
            session.stepped(terms, session.rates())
            session.show(shown)
            if session.should_stop():
                break
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import torch
import torch.distributed as dist

from catneuron.data.sources import BatchSource
from catneuron.errors import UserError
from catneuron.model.config import Config, to_dict
from catneuron.progress import Progress
from catneuron.store import files, provenance, runs
from catneuron.train.events import Events
from catneuron.train.metrics import MetricsLog
from catneuron.train.signals import Interrupted, StopSignals

if TYPE_CHECKING:
    from catneuron.train.trainer import Trainer

log = logging.getLogger(__name__)
UNLIMITED = sys.maxsize  # the step limit of a run that only `--minutes` ends


class Watcher(Protocol):
    """What a trainer calls of its `--watch` (catneuron.train.watch.Watch; a model-parallel rank's BlockWatch)."""

    def start(self, run: Path, config: Config, data_spec: str, source: BatchSource, metrics: MetricsLog | None,
              network, images: int, max_seconds: float | None = None) -> None: ...

    def due(self, images: int) -> bool: ...

    def observe(self, network, images: int, step: int) -> None: ...

    def ensure(self, network, images: int, step: int) -> None: ...

    def fields(self, images: int | None = None) -> dict[str, str]: ...


@dataclass
class TrainResult:
    step: int
    stopped_early: bool
    last: dict


class Diverged(UserError):
    """The objective became NaN or infinite: training stops rather than go on and save weights that mean nothing."""


def stopped(error: Diverged, run: Path, saved_step: int | None) -> Diverged:
    """The one line a diverged run ends with: where the last finite checkpoint is, and what to try."""
    kept = (f"{runs.checkpoint_path(run)} holds step {saved_step}, the last finite one" if saved_step is not None
            else "no checkpoint was written")
    return Diverged(f"{error}; training stopped: {kept} (a lower --lr may help)")


def interrupted(run: Path, step: int, data_spec: str, signum: int = signal.SIGINT, flags: str = "",
                say: Callable[[str], None] | None = None) -> Interrupted:
    """Tell the user where the signal left the checkpoint and the command that continues the run (the CLI
    cannot: it exits 128 + the signal's number without a word); the exception to raise. `say`: None on the
    ranks that do not report."""
    how = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
    message = (f"interrupted{how} at step {step}: checkpoint {runs.checkpoint_path(run)}; continue with "
               f"`catneuron train --resume --out '{run}' --data '{data_spec}'{flags}`")
    if say is not None:
        say(f"catneuron: {message}")
    return Interrupted(message, signum)


class Session:
    """One call of a trainer's `fit`: what happens around its steps, for `steps` steps in all (None: until
    `max_seconds`). `save`: how a checkpoint is written (the trainer's own unless given: Downpour's assembles it
    from the shards). Leaving the block writes the final checkpoint; a stop signal or Ctrl-C saves, says how to
    continue and raises Interrupted; a non-finite objective keeps the last finite checkpoint and raises Diverged."""

    def __init__(self, trainer: Trainer, steps: int | None, max_seconds: float | None = None, progress: bool = True,
                 save: Callable[[], None] | None = None, say: Callable[[str], None] = log.warning,
                 device: torch.device | None = None) -> None:
        if steps is not None and steps < trainer.step:
            raise UserError(f"--steps {steps}: the run is already at step {trainer.step}")
        self.trainer, self.max_seconds, self.say = trainer, max_seconds, say
        self.device = device or trainer.device  # where the steps compute (Downpour's replicas, not its driver)
        self.steps = steps if steps is not None else UNLIMITED
        self.save = save or trainer.save
        self.bar = Progress(steps, "step", enabled=progress and trainer.leader)
        self.metrics: MetricsLog | None = None
        self.signals = StopSignals(escalate=not (dist.is_available() and dist.is_initialized()))
        self.signum: int | None = None  # the signal the run stops on, as every rank of a replica agrees
        self.last: dict = {}

    def __enter__(self) -> Session:
        t = self.trainer
        t.run.mkdir(parents=True, exist_ok=True)
        if t.leader:
            config = {"config": to_dict(t.config), "data": t.data_spec}
            files.write_json(t.run / runs.CONFIG, config)
            provenance.record_session(t.run, self.device, t.step)
            runs.truncate_metrics(t.run, t.step)
            self.metrics = MetricsLog(t.run, Events(t.run, t.wandb, config))
        self.start, self.start_step = time.monotonic(), t.step
        self.signals.__enter__()
        try:
            if t.watch:
                t.watch.start(t.run, t.config, t.data_spec, t.source, self.metrics, t.network, self.images,
                              self.max_seconds)
        except BaseException:
            self._close()
            raise
        return self

    @property
    def images(self) -> int:
        """Images trained on so far: where the watch's curve stands."""
        return self.trainer.step * self.trainer.config.train.batch_size

    def rates(self, step: int | None = None) -> dict[str, float]:
        """The row's timing at `step` (default: now): images per second this session, seconds elapsed."""
        elapsed = time.monotonic() - self.start
        done = (self.trainer.step if step is None else step) - self.start_step
        return {"images_per_s": done * self.trainer.config.train.batch_size / max(elapsed, 1e-9),
                "elapsed_s": elapsed}

    def stepped(self, terms: dict[str, float], stats: dict) -> None:
        """The trainer has done step `trainer.step` (its objective's `terms`): log its row at the log cadence, save
        at the checkpoint cadence. `stats`: the row's timing (`rates`) and whatever else the trainer measures."""
        t = self.trainer
        cfg = t.config.train
        self.last = {"step": t.step, **stats, **terms}
        if self.metrics is not None and (t.step % cfg.log_every == 0 or t.step == self.steps):
            self.metrics.write(self.last)
        if t.step % cfg.checkpoint_every == 0:
            self.save()

    def watch_point(self, network) -> None:
        """Scan now if the watch is due (a trainer whose scans run in line with its steps)."""
        watch = self.trainer.watch
        if watch and watch.due(self.images):
            watch.observe(network, self.images, self.trainer.step)

    def watch_end(self, network) -> None:
        """The end of the curve, unless a signal ends the run (a scan would spend its grace time)."""
        if self.trainer.watch and self.signum is None:
            self.trainer.watch.ensure(network, self.images, self.trainer.step)

    def show(self, fields: dict[str, float]) -> None:
        """The progress line: the step, its rate, `fields`, the watch's, and the time left."""
        t, rate = self.trainer, self.last["images_per_s"]
        remaining = (self.steps - t.step) * t.config.train.batch_size / max(rate, 1e-9)
        if self.max_seconds is not None:
            remaining = min(remaining, self.max_seconds - self.last["elapsed_s"])
        watched = t.watch.fields(self.images) if t.watch else {}
        self.bar.update(t.step, rate, "img", fields | watched, eta=remaining)

    def time_up(self) -> bool:
        return self.max_seconds is not None and time.monotonic() - self.start >= self.max_seconds

    def signalled(self) -> bool:
        """Whether a stop signal came (for a loop that winds down by itself when time is up: Downpour's)."""
        self.signum = self.signals.received
        return self.signum is not None

    def should_stop(self) -> bool:
        """Whether to stop after this step: `--minutes` is up or a stop signal came (the ranks of a model-parallel
        replica agree on both)."""
        stop, self.signum = self.trainer.decide_stop(self.time_up(), self.signals.received)
        return stop

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        t = self.trainer
        try:
            if isinstance(error, Diverged):
                with suppress(Diverged):  # weights gone bad in the update: the checkpoint on disk is the last finite
                    self.save()
                raise stopped(error, t.run, t.saved_step) from None
            if error is not None and not isinstance(error, KeyboardInterrupt):
                return
            signum = self.signum or self.signals.received or signal.SIGINT
            try:
                self.save()
            except Diverged as e:
                raise stopped(e, t.run, t.saved_step) from None
            if error is not None or self.signum is not None:
                raise interrupted(t.run, t.step, t.data_spec, signum, t.resume_flags,
                                  self.say if t.leader else None) from None
            if self.last:
                self.bar.update(t.step, self.last["images_per_s"], "img", {"loss": self.last["loss"]}, eta=0,
                                final=True)
        finally:
            self._close()

    def _close(self) -> None:
        self.signals.__exit__()
        if self.metrics is not None:
            self.metrics.close()

    def result(self) -> TrainResult:
        return TrainResult(self.trainer.step, self.trainer.step < self.steps, self.last)

