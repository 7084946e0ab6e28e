"""The single-process trainer: minibatch SGD or Adagrad on the sum of the stage objectives."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from catneuron.data.prefetch import Prefetch
from catneuron.data.sources import BatchSource, absolute_spec, open_source
from catneuron.errors import UserError
from catneuron.model import budget, gpu_plan
from catneuron.model.config import Config
from catneuron.model.network import Network, StageNetwork
from catneuron.model.stage import StageOutput
from catneuron.store import checkpoint, runs
from catneuron.train.loop import Diverged, Session, TrainResult, Watcher


def make_optimizer(config: Config, params) -> torch.optim.Optimizer:
    params = list(params)
    if config.train.optimizer == "adagrad":
        # The fused kernel (CPU only) updates in one pass over memory: 4x faster on the paper's 1e9 weights.
        # CUDA has no fused Adagrad, and torch would choose `foreach` there, whose temporaries the size of all
        # the weights raise a `paper` step's peak from 12.5 to 17.6 GiB (fake-CUDA run, docs/scale.md): one tensor at a
        # time instead, which costs nothing with the network's few large tensors.
        fused = all(p.device.type == "cpu" for p in params)
        return torch.optim.Adagrad(params, lr=config.train.lr, fused=fused, foreach=False)
    return torch.optim.SGD(params, lr=config.train.lr)


def term_values(outputs: list[StageOutput]) -> torch.Tensor:
    """The objective's terms, (recon_1, sparsity_1, recon_2, ...), as one float64 tensor where they were computed."""
    return torch.stack([t.detach() for out in outputs for t in (out.reconstruction, out.sparsity)]).double()


def read_terms(values: torch.Tensor) -> dict[str, float]:
    """`term_values` as plain floats for logs, by name, and their sum as "loss": brought to the host in one copy,
    the step's one wait on a GPU (a float() per term was one wait each)."""
    host = values.cpu()
    terms = {f"{kind}_{i // 2 + 1}": float(v) for i, (kind, v) in
             enumerate(zip(("recon", "sparsity") * (len(host) // 2), host, strict=True))}
    terms["loss"] = sum(terms.values())
    return terms


def loss_terms(outputs: list[StageOutput]) -> dict[str, float]:
    """The objective's terms by stage, as plain floats for logs: recon_1, sparsity_1, ..."""
    return read_terms(term_values(outputs))


def for_device(batches: Iterator[torch.Tensor], device: torch.device) -> Iterator[torch.Tensor]:
    """Batches for `device`: for CUDA in page-locked memory (pinned where they are made, on the prefetch thread), so
    that the step's non_blocking copy is a real asynchronous one; from pageable memory it would wait on it."""
    return (batch.pin_memory() for batch in batches) if device.type == "cuda" else batches


def check_finite(terms: dict[str, float], step: int) -> None:
    """Raise Diverged at the first non-finite objective (`step`: the step that computed it)."""
    if not math.isfinite(terms["loss"]):
        bad = ", ".join(f"{k} {v:.4g}" for k, v in terms.items() if not math.isfinite(v))
        raise Diverged(f"step {step}: the objective is not finite ({bad})")


class Trainer:
    """Trains a Network from a BatchSource into a run folder, resumable from its checkpoint.

    `data_spec` is the `--data` the source was opened from; the run records it absolute. The network comes
    from `build_network` (a model-parallel rank builds its blocks: catneuron.parallel.trainer).
    """

    leader = True  # writes the run folder (of a model-parallel replica, only rank 0 does: catneuron.parallel)
    resume_flags = ""  # what `train --resume` needs besides --out and --data to go on as this run did
    wandb: str | None = None  # `--wandb PROJECT`: the metrics rows also go to W&B (train/events.py)

    def __init__(self, config: Config, source: BatchSource, run: str | Path, device: str | torch.device = "cpu",
                 data_spec: str = "") -> None:
        self.config, self.source, self.run = config, source, Path(run)
        self.device = torch.device(device)
        self.data_spec = absolute_spec(data_spec) if data_spec else source.description
        torch.manual_seed(config.train.seed)
        with self.device:  # built where it trains: no copy of the weights through host memory
            self.network = self.build_network()
        self.network.set_precision(config.train.precision)
        self.optimizer = make_optimizer(config, self.network.parameters())
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk
        self.watch: Watcher | None = None  # `--watch`: scans the network as it trains (catneuron.train.watch)

    def build_network(self) -> StageNetwork:
        """The network this process trains: the whole one, its weights drawn and normalized, once it is known to
        fit the device's memory with its batch and activations."""
        batch = self.config.train.batch_size
        budget.check_fits(budget.training_bytes(self.config.model, batch),
                          f"training the {self.config.preset} model on batches of {batch:,}", self.device)
        network = Network(self.config.model)
        network.normalize_weights()
        return network

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
        outputs = self.network(images.to(self.device, non_blocking=True))  # pinned on CUDA: `for_device`
        loss = self.network.loss(outputs)
        terms = self.terms(outputs)  # summed over ranks under model parallelism: every rank sees the same
        check_finite(terms, self.step + 1)  # before the update: the weights stay those of the last finite step
        loss.backward()
        self.optimizer.step()
        self.network.normalize_weights()
        self.step += 1
        return terms

    @functools.cached_property
    def flops_per_image(self) -> int:
        """A training step's FLOPs per image: a constant of the run, counted once, not at every step."""
        return budget.training_flops(self.config.model)

    def utilisation(self, images_per_s: float) -> float | None:
        """The progress line's model FLOPs utilisation on a known GPU (percent of its peak), else None."""
        return gpu_plan.utilisation(images_per_s, self.flops_per_image, self.device, self.config.train.precision)

    def terms(self, outputs: list[StageOutput]) -> dict[str, float]:
        """The logged objective's terms (a model-parallel rank's are its share: they are summed over ranks)."""
        return loss_terms(outputs)

    def batches(self) -> Iterator[torch.Tensor]:
        """The training batches from the current step on, made a batch ahead on a thread of their own (prefetch.py),
        except where ranks of a process group make them together (catneuron.parallel broadcasts rank 0's), which
        must stay on this thread, in step with the collectives of the training step."""
        t = self.config.train
        batches = self.source.batches(t.batch_size, t.seed, start_step=self.step)
        return batches if dist.is_available() and dist.is_initialized() else Prefetch(for_device(batches, self.device))

    def decide_stop(self, time_up: bool, signum: int | None) -> tuple[bool, int | None]:
        """Whether to stop after this step, and the stop signal if one came (the ranks of a model-parallel
        replica stop at the same step: catneuron.parallel)."""
        return time_up or signum is not None, signum

    def save(self, extra: dict | None = None) -> None:
        """Write the checkpoint (`extra`: more metadata); weights that are no longer finite are never written
        over a good one."""
        bad = self.non_finite()
        if bad is not None:
            raise Diverged(f"step {self.step}: the weights are not finite ({bad})")
        self.write_checkpoint({"data": self.data_spec} | (extra or {}))
        self.saved_step = self.step

    def non_finite(self) -> str | None:
        """What holds NaN or infinity among the weights, or None."""
        return checkpoint.non_finite(self.network.state_dict())

    def write_checkpoint(self, extra: dict) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        checkpoint.save(runs.checkpoint_path(self.run), self.config, self.step, self.network, self.optimizer,
                        extra=extra)

    def fit(self, steps: int | None, max_seconds: float | None = None, progress: bool = True) -> TrainResult:
        """Train until `steps` total steps (None: until `max_seconds`), logging and checkpointing as configured.

        Ctrl-C, SIGTERM or SIGHUP stop the run after the step in progress, with a checkpoint, so `--resume`
        loses nothing (catneuron.train.signals). A non-finite objective stops the run (Diverged), the checkpoint
        holding the last finite step.
        """
        with Session(self, steps, max_seconds, progress) as session:
            batches = self.batches()
            try:
                while self.step < session.steps:
                    terms = self.train_step(next(batches))
                    session.watch_point(self.network)
                    session.stepped(terms, session.rates())
                    shown = {k: v for k, v in terms.items() if k.startswith(("recon", "sparsity"))}
                    mfu = self.utilisation(session.last["images_per_s"])
                    session.show(shown | ({"MFU%": mfu} if mfu is not None else {}))
                    if session.should_stop():
                        break
                session.watch_end(self.network)
            finally:
                if isinstance(batches, Prefetch):
                    batches.close()
        return session.result()


def train_run(config: Config, data: str, out: Path, steps: int, device: str | torch.device = "cpu") -> Path:
    """Train a run folder to `steps` steps, resuming it if it has a checkpoint (how `table` trains its models)."""
    source = open_source(data, config.model.input_size, config.model.channels)
    trainer = Trainer.resume(out, source, device) if runs.checkpoint_path(out).is_file() else Trainer(
        config, source, out, device, data_spec=data)
    trainer.fit(steps)
    return out
