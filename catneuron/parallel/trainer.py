"""Training one replica spread over R x C ranks: the single-process trainer's loop on every rank.

Rank 0 reads the batches and sends each to every rank, writes the metrics (the objective's terms
summed over ranks) and the checkpoint (the blocks gathered into the single-process format, written
atomically as the rows arrive), so `--resume` works on any grid and `evaluate`, `visualize`, `report`
read the run as any other. The other ranks compute their blocks and write nothing. No rank holds the
whole model: each draws or reads its own blocks (catneuron.parallel.state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from catneuron.data.sources import BatchSource, open_source
from catneuron.model.config import Config
from catneuron.model.stage import StageOutput
from catneuron.parallel.device import CPU, check_gpus, for_group, group_device
from catneuron.parallel.halo import rank0_decides
from catneuron.parallel.launch import RankFailed, ranks_here, run_ranks, run_this_rank, torchrun_rank
from catneuron.parallel.network import BlockNetwork
from catneuron.parallel.state import initial_blocks, read_blocks, save_blocks
from catneuron.parallel.watch import BlockWatch
from catneuron.store import checkpoint, runs
from catneuron.train.trainer import Diverged, Trainer, TrainResult, loss_terms, make_optimizer
from catneuron.train.watch import Watch


class SharedBatches:
    """Rank 0's source, its batches sent to every rank (the others pass `source=None`)."""

    def __init__(self, source: BatchSource | None, shape: tuple[int, int, int]) -> None:
        self.source, self.shape = source, shape
        self.description = source.description if source is not None else "batches from rank 0"

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        own = self.source.batches(batch_size, seed, start_step) if self.source is not None else None
        while True:
            batch = (for_group(next(own).float().contiguous()) if own is not None
                     else torch.empty(batch_size, *self.shape, device=group_device()))
            dist.broadcast(batch, 0)
            yield batch


def summed_terms(outputs: list[StageOutput]) -> dict[str, float]:
    """The objective's terms summed over the ranks of the process group (each rank's are its block's share)."""
    mine = loss_terms(outputs)
    total = torch.tensor(list(mine.values()), dtype=torch.float64, device=group_device())
    dist.all_reduce(total)
    return dict(zip(mine, total.tolist(), strict=True))


class BlockTrainer(Trainer):
    """`Trainer` for one rank of a model-parallel replica: its network is a `BlockNetwork`. `watch`: the run's
    `--watch` (rank 0's is used; catneuron.parallel.watch)."""

    def __init__(self, config: Config, data: str, run: str | Path, grid: tuple[int, int], rank: int,
                 resume: bool = False, watch: Watch | None = None) -> None:
        # Not Trainer.__init__: that builds the whole network. The rank computes where its group talks.
        self.config, self.run, self.device, self.data_spec = config, Path(run), group_device(), data
        self.leader = rank == 0
        m = config.model
        self.source = SharedBatches(open_source(data, m.input_size, m.channels) if self.leader else None,
                                    (m.channels, m.input_size, m.input_size))
        self.network = BlockNetwork(m, grid, rank).to(self.device)
        self.network.set_precision(config.train.precision)
        self.optimizer = make_optimizer(config, self.network.parameters())
        self.step = 0
        self.saved_step: int | None = None
        self.watch = BlockWatch(watch if self.leader else None, self.network) if watch is not None else None
        if resume:  # rank 0 checks the whole file's checksum; each rank reads its rows
            ckpt = read_blocks(self.network, self.optimizer, runs.checkpoint_path(run), verify=self.leader)
            if ckpt.rng is not None:
                torch.set_rng_state(ckpt.rng)
            self.step, self.data_spec = ckpt.step, ckpt.extra.get("data", data)
            self.saved_step = ckpt.step
        else:
            initial_blocks(self.network, config.train.seed)  # the single-process trainer's, restricted to the blocks

    def terms(self, outputs: list[StageOutput]) -> dict[str, float]:
        return summed_terms(outputs)

    def should_stop(self, elapsed: float, max_seconds: float | None) -> bool:
        if max_seconds is None:
            return False
        return rank0_decides(super().should_stop(elapsed, max_seconds))

    def save(self) -> None:
        """Trainer.save on every rank: refused on every rank if any block's weights are not finite."""
        bad = checkpoint.non_finite({name: p.detach() for name, p in self.network.named_parameters()})
        flags = torch.zeros(self.network.grid[0] * self.network.grid[1], device=group_device())
        flags[self.network.rank] = float(bad is not None)
        dist.all_reduce(flags)
        if flags.any():
            ranks = ", ".join(str(r) for r in flags.nonzero().flatten().tolist())
            raise Diverged(f"step {self.step}: the weights are not finite (the blocks of rank(s) {ranks})")
        if self.leader:
            self.run.mkdir(parents=True, exist_ok=True)
        grid = self.network.grid
        save_blocks(self.network, self.optimizer, runs.checkpoint_path(self.run), self.config, self.step,
                    extra={"data": self.data_spec, "partitions": f"{grid[0]}x{grid[1]}"})
        self.saved_step = self.step


@dataclass(frozen=True)
class Job:
    config: Config
    data: str
    run: str
    grid: tuple[int, int]
    resume: bool
    steps: int
    max_seconds: float | None
    watch: Watch | None = None
    wandb: str | None = None  # `--wandb PROJECT`: rank 0 logs there too


def _train_rank(rank: int, world: int, job: Job) -> dict | None:
    trainer = BlockTrainer(job.config, job.data, job.run, job.grid, rank, job.resume, job.watch)
    trainer.wandb = job.wandb
    result = trainer.fit(job.steps, job.max_seconds)
    return dataclasses.asdict(result) if rank == 0 else None


class ModelParallel:
    """`catneuron train --partitions RxC`: starts the R*C ranks of one replica and waits for them, or, when
    torchrun has started this process as one of them (on a cluster), runs that rank. `device`: cpu, or cuda for
    one GPU per rank (refused here when this machine's ranks outnumber its GPUs)."""

    def __init__(self, config: Config, data: str, run: str | Path, grid: tuple[int, int], threads: int,
                 resume: bool, watch: Watch | None = None, device: torch.device = CPU) -> None:
        check_gpus(device, ranks_here(grid[0] * grid[1]), grid)
        self.config, self.data, self.run, self.grid, self.threads, self.resume = (
            config, data, str(run), grid, threads, resume)
        self.watch, self.device = watch, device
        self.wandb: str | None = None  # `--wandb PROJECT`

    @property
    def leader(self) -> bool:
        """Whether this process reports: the launcher, or rank 0 when torchrun started every rank."""
        return (torchrun_rank() or (0, 1))[0] == 0

    def fit(self, steps: int, max_seconds: float | None = None) -> TrainResult | None:
        """Train; the result on the leader, None on torchrun's other ranks."""
        job = Job(self.config, self.data, self.run, self.grid, self.resume, steps, max_seconds, self.watch, self.wandb)
        world = self.grid[0] * self.grid[1]
        if torchrun_rank() is not None:
            result = run_this_rank(_train_rank, world, (job,), self.threads, self.device)
            return TrainResult(**result) if result is not None else None
        try:
            result = run_ranks(_train_rank, world, (job,), self.threads, self.device)
        except RankFailed as e:
            kept = runs.checkpoint_path(self.run)
            after = (f"{kept} is intact: --resume goes on from it" if kept.is_file()
                     else "no checkpoint had been written yet")
            raise RankFailed(f"{e}; the run stopped, {after}") from None
        return TrainResult(**result)
