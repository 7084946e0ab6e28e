"""Downpour with model-parallel replicas (`--replicas N --partitions RxC`): parameter shards aligned with the
blocks, and each replica's R*C ranks started as Ray actors that meet in a process group of their own (gloo, or
NCCL when each rank has a GPU).

Shard `s*K + k` holds rows range k of block s's part of every tensor (block s's positions of each stage's
filter grid, as `BlockNetwork` lays them out), so rank s fetches from and pushes to its K shards only, and
no shard is touched by two blocks. The driver maps between these rows and the whole network's tensors
for the first load, checkpoints and the watch (docs/distributed.md).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from catneuron.downpour.replica import BlockRank
from catneuron.downpour.shards import gather, layout, named_shapes, scatter
from catneuron.model.config import Config, ModelConfig
from catneuron.parallel.device import gpus_per_rank
from catneuron.parallel.grid import StagePlan, plan
from catneuron.parallel.network import block_of, place_block

Where = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # a stage's filter grid, a block's rows, cols


def _where(plans: list[StagePlan], name: str, block: int) -> Where:
    """Parameter `name` (stages.<i>.encoder.weight ...): its stage's filter grid and `block`'s rows and columns."""
    stage = plans[int(name.split(".")[1])]
    b = stage.filter.block(block)
    return stage.filter.size, b.rows, b.cols


class BlockShards:
    """`per_block` shards for each block of an R x C grid (`--ps-shards` counts shards per block)."""

    def __init__(self, network: nn.Module, model: ModelConfig, grid: tuple[int, int], per_block: int) -> None:
        plans = plan(model, grid)
        shapes = named_shapes(network)
        self.per_block = per_block
        self.where = [[_where(plans, name, s) for name, _ in shapes] for s in range(grid[0] * grid[1])]
        self.pieces = []
        for where in self.where:
            block_shapes = [(name, ((r[1] - r[0]) * (c[1] - c[0]), *shape[1:]))
                            for (name, shape), (_, r, c) in zip(shapes, where, strict=True)]
            self.pieces += layout(block_shapes, per_block)

    def _blocks(self, tensors: Sequence[torch.Tensor], k: int) -> tuple[int, list[torch.Tensor]]:
        s = k // self.per_block
        return s, [block_of(t.detach(), *w) for t, w in zip(tensors, self.where[s], strict=True)]

    def gather(self, tensors: Sequence[torch.Tensor], k: int) -> np.ndarray:
        """Shard k's rows of the whole network's tensors, as its flat array."""
        return gather(self._blocks(tensors, k)[1], self.pieces[k])

    def scatter(self, flat: np.ndarray, k: int, tensors: Sequence[torch.Tensor]) -> None:
        """Write shard k's flat array into its rows of the whole network's tensors."""
        s, blocks = self._blocks(tensors, k)
        scatter(flat, self.pieces[k], blocks)
        for t, b, w in zip(tensors, blocks, self.where[s], strict=True):
            place_block(t.detach(), b, *w)

    def of_rank(self, rank: int) -> list[int]:
        """The shards rank `rank` (block `rank`) fetches from and pushes to: its block's."""
        return list(range(rank * self.per_block, (rank + 1) * self.per_block))


@dataclass
class ReplicaRanks:
    """One replica's actors (a `Replica`, or the R*C `BlockRank`s) and what goes away with them."""

    actors: list
    group: object | None = None  # the placement group of a replica's ranks
    folder: str | None = None  # the rendezvous folder of a local replica's ranks
    since: float = 0.0  # when its last chunk was asked for (time.monotonic)

    def work(self, steps: int, seconds: float) -> list:
        """Every actor's next chunk: the ranks of a replica compute it together."""
        self.since = time.monotonic()
        return [actor.work.remote(steps, seconds) for actor in self.actors]

    def kill(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        if self.group is not None:
            ray.util.remove_placement_group(self.group)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def merge_reports(reports: list[dict]) -> dict:
    """One report of a replica's chunk from its ranks': rank 0's terms (already summed over the ranks) and
    time, every rank's traffic and staleness."""
    return reports[0] | {"fetched_bytes": sum(r["fetched_bytes"] for r in reports),
                         "pushed_bytes": sum(r["pushed_bytes"] for r in reports),
                         "staleness": [s for r in reports for s in r["staleness"]]}


def start_ranks(name: str, config: Config, source, index: int, replicas: int, start_step: int,
                grid: tuple[int, int], shards: list, shard_map: BlockShards, fetch_every: int, push_every: int,
                cpus: float, threads: int, local: bool, device: torch.device) -> ReplicaRanks:
    """Start replica `index`'s R*C ranks, packed onto as few nodes as hold them (one placement group; on CUDA
    each rank with a GPU of its own), and have them meet: through a file in a fresh private folder on this
    machine (`local`: the ranks' sockets bind loopback), or through a TCP store that rank 0 opens on its node
    (a cluster). Nothing here waits: the ranks' first chunk of work queues behind their `join`."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    world, gpus = grid[0] * grid[1], gpus_per_rank(device)
    bundle = {"CPU": cpus} | ({"GPU": gpus} if gpus else {})
    group = ray.util.placement_group([bundle] * world, strategy="PACK")
    actors = []
    for s in range(world):
        ids = shard_map.of_rank(s)
        actor = ray.remote(BlockRank).options(
            name=f"{name}-rank-{s}", num_cpus=cpus, num_gpus=gpus, max_restarts=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=s))
        actors.append(actor.remote(config, source if s == 0 else None, index, replicas, start_step, grid, s,
                                   [shards[k] for k in ids], [shard_map.pieces[k] for k in ids], fetch_every,
                                   push_every, threads, device))
    folder = tempfile.mkdtemp(prefix="catneuron-ranks-") if local else None
    rendezvous = ({"file": str(Path(folder) / "store")} if folder is not None
                  else actors[0].open_rendezvous.remote())  # type: ignore[attr-defined]  # Ray's stubs lack .remote
    for rank in actors:
        rank.join.remote(rendezvous)  # type: ignore[attr-defined]
    return ReplicaRanks(actors, group, folder)
