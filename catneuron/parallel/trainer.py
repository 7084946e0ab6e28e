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
from catneuron.parallel.launch import RankFailed, leads, ranks_here, run_ranks, run_this_rank, torchrun_rank
from catneuron.parallel.network import BlockNetwork
from catneuron.parallel.state import initial_blocks, read_blocks, save_blocks
from catneuron.parallel.watch import BlockWatch
from catneuron.store import checkpoint, runs
from catneuron.train.loop import TrainResult
from catneuron.train.trainer import Trainer, read_terms, term_values
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
    total = term_values(outputs)
    dist.all_reduce(total)
    return read_terms(total)


class BlockTrainer(Trainer):
    """`Trainer` for one rank of a model-parallel replica: its network is a `BlockNetwork`. `watch`: the run's
    `--watch` (rank 0's is used; catneuron.parallel.watch)."""

    network: BlockNetwork  # the rank's share of Trainer's network
    watch: BlockWatch | None

    def __init__(self, config: Config, data: str, run: str | Path, grid: tuple[int, int], rank: int,
                 resume: bool = False, watch: Watch | None = None) -> None:
        self.grid, self.rank, self.leader = grid, rank, rank == 0
        self.resume_flags = f" --partitions {grid[0]}x{grid[1]}"
        m = config.model
        source = SharedBatches(open_source(data, m.input_size, m.channels) if self.leader else None,
                               (m.channels, m.input_size, m.input_size))
        super().__init__(config, source, run, group_device(), data)
        self.watch = BlockWatch(watch if self.leader else None, self.network) if watch is not None else None
        if resume:  # rank 0 checks the whole file's checksum; each rank reads its rows
            ckpt = read_blocks(self.network, self.optimizer, runs.checkpoint_path(run), verify=self.leader)
            if ckpt.rng is not None:
                torch.set_rng_state(ckpt.rng)
            self.step, self.data_spec = ckpt.step, ckpt.extra.get("data", data)
            self.saved_step = ckpt.step
        else:
            initial_blocks(self.network, config.train.seed)  # the single-process trainer's, restricted to the blocks

    def build_network(self) -> BlockNetwork:
        """This rank's blocks of every stage, computing where its group talks (not the whole network)."""
        return BlockNetwork(self.config.model, self.grid, self.rank)  # on the device: Trainer builds it there

    def terms(self, outputs: list[StageOutput]) -> dict[str, float]:
        return summed_terms(outputs)

    def decide_stop(self, time_up: bool, signum: int | None) -> tuple[bool, int | None]:
        """Every rank stops at the same step: when rank 0's clock says `--minutes` is up, or any rank got a stop
        signal (a scheduler signals them all; a launcher passes its own on)."""
        votes = torch.tensor([float(time_up and self.leader), float(signum or 0)], device=group_device())
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        agreed = int(votes[1].item()) or None
        return bool(votes[0].item()) or agreed is not None, agreed

    def non_finite(self) -> str | None:
        """Refused on every rank if any block's weights are not finite."""
        bad = checkpoint.non_finite({name: p.detach() for name, p in self.network.named_parameters()})
        flags = torch.zeros(self.grid[0] * self.grid[1], device=group_device())
        flags[self.rank] = float(bad is not None)
        dist.all_reduce(flags)
        if not flags.any():
            return None
        return "the blocks of rank(s) " + ", ".join(str(r) for r in flags.nonzero().flatten().tolist())

    def write_checkpoint(self, extra: dict) -> None:
        """Every rank sends its rows; rank 0 writes them (catneuron.parallel.state)."""
        if self.leader:
            self.run.mkdir(parents=True, exist_ok=True)
        save_blocks(self.network, self.optimizer, runs.checkpoint_path(self.run), self.config, self.step,
                    extra=extra | {"partitions": f"{self.grid[0]}x{self.grid[1]}"})


@dataclass(frozen=True)
class Job:
    config: Config
    data: str
    run: str
    grid: tuple[int, int]
    resume: bool
    steps: int | None
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
        return leads()

    def fit(self, steps: int | None, max_seconds: float | None = None) -> TrainResult | None:
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
