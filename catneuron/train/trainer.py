"""The single-process trainer: minibatch SGD or Adagrad on the sum of the stage objectives."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from catneuron.data.prefetch import Prefetch
from catneuron.data.sources import BatchSource, absolute_spec, open_source
from catneuron.errors import UserError
from catneuron.model import budget
from catneuron.model.config import Config, to_dict
from catneuron.model.network import Network
from catneuron.model.stage import StageOutput
from catneuron.progress import Progress
from catneuron.store import checkpoint, files, provenance, runs
from catneuron.train.events import Events

if TYPE_CHECKING:
    from catneuron.train.watch import Watch


def make_optimizer(config: Config, params) -> torch.optim.Optimizer:
    params = list(params)
    if config.train.optimizer == "adagrad":
        # The fused kernel (CPU only) updates in one pass over memory: 4x faster on the paper's 1e9 weights.
        fused = all(p.device.type == "cpu" for p in params)
        return torch.optim.Adagrad(params, lr=config.train.lr, fused=fused)
    return torch.optim.SGD(params, lr=config.train.lr)


def loss_terms(outputs: list[StageOutput]) -> dict[str, float]:
    """The objective's terms by stage, as plain floats for logs: recon_1, sparsity_1, ..."""
    terms = {}
    for i, out in enumerate(outputs, start=1):
        terms[f"recon_{i}"] = float(out.reconstruction.detach())
        terms[f"sparsity_{i}"] = float(out.sparsity.detach())
    terms["loss"] = sum(terms.values())
    return terms


class Diverged(UserError):
    """The objective became NaN or infinite: training stops rather than go on and save weights that mean nothing."""


def check_finite(terms: dict[str, float], step: int) -> None:
    """Raise Diverged at the first non-finite objective (`step`: the step that computed it)."""
    if not math.isfinite(terms["loss"]):
        bad = ", ".join(f"{k} {v:.4g}" for k, v in terms.items() if not math.isfinite(v))
        raise Diverged(f"step {step}: the objective is not finite ({bad})")


def stopped(error: Diverged, run: Path, saved_step: int | None) -> Diverged:
    """The one line a diverged run ends with: where the last finite checkpoint is, and what to try."""
    kept = (f"{runs.checkpoint_path(run)} holds step {saved_step}, the last finite one" if saved_step is not None
            else "no checkpoint was written")
    return Diverged(f"{error}; training stopped: {kept} (a lower --lr may help)")


def interrupted(run: Path, step: int, data_spec: str) -> KeyboardInterrupt:
    """Tell the user, on stderr, where Ctrl-C left the checkpoint and the command that continues the run (the
    CLI cannot: typer turns KeyboardInterrupt into exit status 130 without a word); the exception to raise."""
    message = (f"interrupted at step {step}: checkpoint {runs.checkpoint_path(run)}; continue with "
               f"`catneuron train --resume --out '{run}' --data '{data_spec}'`")
    print(f"catneuron: {message}", file=sys.stderr)
    return KeyboardInterrupt(message)


@dataclass
class TrainResult:
    step: int
    stopped_early: bool
    last: dict


class Trainer:
    """Trains a Network from a BatchSource into a run folder, resumable from its checkpoint.

    `data_spec` is the `--data` the source was opened from; the run records it absolute.
    """

    leader = True  # writes the run folder (of a model-parallel replica, only rank 0 does: catneuron.parallel)
    wandb: str | None = None  # `--wandb PROJECT`: the metrics rows also go to W&B (train/events.py)

    def __init__(self, config: Config, source: BatchSource, run: str | Path, device: str | torch.device = "cpu",
                 data_spec: str = "") -> None:
        self.config, self.source, self.run = config, source, Path(run)
        self.device = torch.device(device)
        self.data_spec = absolute_spec(data_spec) if data_spec else source.description
        torch.manual_seed(config.train.seed)
        budget.check_fits(budget.training_bytes(config.model), f"training the {config.preset} model")
        self.network = Network(config.model).to(self.device)
        self.network.set_precision(config.train.precision)
        self.network.normalize_weights()
        self.optimizer = make_optimizer(config, self.network.parameters())
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk
        self.watch: Watch | None = None  # `--watch`: scans the network as it trains (catneuron.train.watch)

    @classmethod
    def resume(cls, run: str | Path, source: BatchSource, device: str | torch.device = "cpu") -> Trainer:
        ckpt = checkpoint.load(runs.checkpoint_path(run))
        trainer = cls(ckpt.config, source, run, device, ckpt.extra.get("data", ""))
        path = runs.checkpoint_path(run)
        checkpoint.load_weights(trainer.network, ckpt.model, path)
        if ckpt.optimizer is not None:
            try:
                trainer.optimizer.load_state_dict(ckpt.optimizer)
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path}: damaged checkpoint (optimizer state: {e})") from None
        if ckpt.rng is not None:
            torch.set_rng_state(ckpt.rng)
        trainer.step = trainer.saved_step = ckpt.step
        return trainer

    def train_step(self, images: torch.Tensor) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.network(images.to(self.device, non_blocking=True))
        loss = self.network.loss(outputs)
        terms = self.terms(outputs)  # summed over ranks under model parallelism: every rank sees the same
        check_finite(terms, self.step + 1)  # before the update: the weights stay those of the last finite step
        loss.backward()
        self.optimizer.step()
        self.network.normalize_weights()
        self.step += 1
        return terms

    def terms(self, outputs: list[StageOutput]) -> dict[str, float]:
        """The logged objective's terms (a model-parallel rank's are its share: they are summed over ranks)."""
        return loss_terms(outputs)

    def batches(self) -> Iterator[torch.Tensor]:
        """The training batches from the current step on, made a batch ahead on a thread of their own (prefetch.py),
        except where ranks of a process group make them together (catneuron.parallel broadcasts rank 0's), which
        must stay on this thread, in step with the collectives of the training step."""
        t = self.config.train
        batches = self.source.batches(t.batch_size, t.seed, start_step=self.step)
        return batches if dist.is_available() and dist.is_initialized() else Prefetch(batches)

    def should_stop(self, elapsed: float, max_seconds: float | None) -> bool:
        """Whether `--minutes` is up (ranks of a model-parallel replica stop at the step rank 0 says)."""
        return max_seconds is not None and elapsed >= max_seconds

    def save(self) -> None:
        """Write the checkpoint; weights that are no longer finite are never written over a good one."""
        bad = checkpoint.non_finite(self.network.state_dict())
        if bad is not None:
            raise Diverged(f"step {self.step}: the weights are not finite ({bad})")
        self.run.mkdir(parents=True, exist_ok=True)
        checkpoint.save(runs.checkpoint_path(self.run), self.config, self.step, self.network, self.optimizer,
                        extra={"data": self.data_spec})
        self.saved_step = self.step

    def events(self) -> Events | contextlib.nullcontext:
        """The TensorBoard (and `--wandb`) copy of the metrics rows, on the process that writes them."""
        if not self.leader:
            return contextlib.nullcontext()
        return Events(self.run, self.wandb, {"config": to_dict(self.config), "data": self.data_spec})

    def fit(self, steps: int, max_seconds: float | None = None, progress: bool = True) -> TrainResult:
        """Train until `steps` total steps (or `max_seconds`), logging and checkpointing as configured.

        Ctrl-C saves a checkpoint before it propagates, so `--resume` loses nothing. A non-finite objective
        stops the run (Diverged), the checkpoint holding the last finite step.
        """
        if steps < self.step:
            raise UserError(f"--steps {steps}: the run is already at step {self.step}")
        self.run.mkdir(parents=True, exist_ok=True)
        if self.leader:
            files.write_json(self.run / runs.CONFIG, {"config": to_dict(self.config), "data": self.data_spec})
            provenance.record_session(self.run, self.device, self.step)
            runs.truncate_metrics(self.run, self.step)
        t = self.config.train
        bar = Progress(steps, "step", enabled=progress and self.leader)
        batches = self.batches()
        start, start_step, last = time.monotonic(), self.step, {}
        stopped_early = False
        try:
            with (open(self.run / runs.METRICS, "a") if self.leader else contextlib.nullcontext() as metrics,
                  self.events() as events):
                if self.watch:
                    self.watch.start(self.run, self.config, self.data_spec, self.source, metrics, self.network,
                                     self.step * t.batch_size, max_seconds, events)
                while self.step < steps:
                    terms = self.train_step(next(batches))
                    if self.watch and self.watch.due(self.step * t.batch_size):
                        self.watch.observe(self.network, self.step * t.batch_size, self.step)
                    elapsed = time.monotonic() - start
                    rate = (self.step - start_step) * t.batch_size / max(elapsed, 1e-9)
                    last = {"step": self.step, "images_per_s": rate, "elapsed_s": elapsed} | terms
                    if metrics and (self.step % t.log_every == 0 or self.step == steps):
                        metrics.write(json.dumps(last) + "\n")
                        metrics.flush()
                        events.add(last)
                    remaining = (steps - self.step) * t.batch_size / max(rate, 1e-9)
                    if max_seconds is not None:
                        remaining = min(remaining, max_seconds - elapsed)
                    shown = {k: v for k, v in terms.items() if k.startswith(("recon", "sparsity"))}
                    shown |= self.watch.fields(self.step * t.batch_size) if self.watch else {}
                    bar.update(self.step, rate, "img", shown, eta=remaining)
                    if self.step % t.checkpoint_every == 0:
                        self.save()
                    if self.should_stop(elapsed, max_seconds):
                        stopped_early = self.step < steps
                        break
                if self.watch:
                    self.watch.ensure(self.network, self.step * t.batch_size, self.step)
        except KeyboardInterrupt:
            self.save()
            raise interrupted(self.run, self.step, self.data_spec) from None
        except Diverged as e:
            with suppress(Diverged):  # weights gone bad in the update: the checkpoint on disk is the last finite
                self.save()
            raise stopped(e, self.run, self.saved_step) from None
        finally:
            if isinstance(batches, Prefetch):
                batches.close()
        self.save()
        if last:
            bar.update(self.step, last["images_per_s"], "img", {"loss": last["loss"]}, eta=0, final=True)
        return TrainResult(self.step, stopped_early, last)


def train_run(config: Config, data: str, out: Path, steps: int, device: str | torch.device = "cpu") -> Path:
    """Train a run folder to `steps` steps, resuming it if it has a checkpoint (how `table` trains its models)."""
    source = open_source(data, config.model.input_size, config.model.channels)
    trainer = Trainer.resume(out, source, device) if runs.checkpoint_path(out).is_file() else Trainer(
        config, source, out, device, data_spec=data)
    trainer.fit(steps)
    return out
