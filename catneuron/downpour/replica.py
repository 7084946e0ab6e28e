"""What runs in a Downpour replica: the Ray actors that compute gradients against the parameter shards.

`Replica` is a whole model replica in one process; `BlockRank` is one rank of a model-parallel replica
(`--partitions RxC`): its block of every stage (catneuron.parallel), its block's shards only, and a process
group (gloo, or NCCL on GPUs) shared with its replica's other ranks alone (docs/distributed.md). On CUDA
each computes on the GPU Ray gave it; the shards stay on the CPU, and fetches and pushes copy rows to and
from the GPU.
"""

from __future__ import annotations

import math
import time
from typing import cast

import torch
import torch.distributed as dist

from catneuron.data.sources import ArraySource, BatchSource
from catneuron.downpour.shards import Piece, gather, scatter
from catneuron.model.config import Config
from catneuron.model.network import Network, StageNetwork
from catneuron.model.stage import StageOutput
from catneuron.parallel.device import CPU, init_group, rank_device
from catneuron.parallel.halo import rank0_decides
from catneuron.parallel.launch import TIMEOUT, join_group
from catneuron.parallel.network import BlockNetwork
from catneuron.parallel.trainer import SharedBatches, summed_terms
from catneuron.train.trainer import loss_terms


def replica_stream(source: BatchSource, seed: int, replica: int, replicas: int) -> tuple[BatchSource, int]:
    """Replica `replica`'s own portion of the data, and the seed of its stream.

    Sources that can split (WebDataset shards) give each replica its share of the shards; images in
    memory are dealt out (every N-th image); other streams (the embedded corpus) are reseeded per replica.
    Replica 0 of 1 sees exactly what the single-process trainer sees.
    """
    if replicas == 1:
        return source, seed
    split = getattr(source, "split", None)
    if split is not None:
        return split(replica, replicas), seed
    if isinstance(source, ArraySource):
        return ArraySource(source.images[replica::replicas], f"{source.description}, replica {replica}",
                           source.flip), seed
    return source, seed + replica


class Replica:
    """A Ray actor: one model replica computing gradients on its own data with parameters that may be stale."""

    def __init__(self, config: Config, source: BatchSource, index: int, replicas: int, start_step: int,
                 shards: list, pieces: list[list[Piece]], fetch_every: int, push_every: int, threads: int,
                 device: torch.device = CPU) -> None:
        torch.set_num_threads(threads)
        self.device = rank_device(device, 0)  # on CUDA, the GPU Ray gave this actor: the only one it sees
        with self.device:  # built where it computes: no copy of the weights through host memory
            network = Network(config.model)
        network.set_precision(config.train.precision)
        stream, seed = replica_stream(source, config.train.seed, index, replicas)
        self._setup(network, stream.batches(config.train.batch_size, seed, start_step), shards, pieces, fetch_every,
                    push_every)

    def _setup(self, network: StageNetwork, batches, shards: list, pieces: list[list[Piece]], fetch_every: int,
               push_every: int) -> None:
        self.network, self.params, self.batches = network, list(network.parameters()), batches
        self.shards, self.pieces = shards, pieces
        self.fetch_every, self.push_every = fetch_every, push_every
        self.versions = [0] * len(shards)
        self.since_fetch, self.accumulated = fetch_every, 0

    def _terms(self, outputs: list[StageOutput]) -> dict[str, float]:
        return loss_terms(outputs)

    def _agree(self, stop: bool) -> bool:
        """Whether to end the chunk here (a model-parallel replica's ranks end it where rank 0 says)."""
        return stop

    def work(self, max_steps: int, max_seconds: float) -> dict:
        """Up to `max_steps` steps, returning early (at a push) after `max_seconds`; all pushes delivered on return."""
        import ray

        start = time.monotonic()
        terms: list[dict[str, float]] = []
        pending: list = []
        fetched = pushed = 0
        while len(terms) < max_steps:
            if self.since_fetch >= self.fetch_every:
                fetched += self._fetch()
            outputs = self.network(next(self.batches).to(self.device))
            loss = self.network.loss(outputs)
            terms.append(self._terms(outputs))
            if not math.isfinite(terms[-1]["loss"]):
                break  # pushes no gradient of it: the driver stops the run
            loss.backward()  # gradients add up in .grad until the push
            self.since_fetch += 1
            self.accumulated += 1
            if self.accumulated >= self.push_every:
                pushed += self._push(pending)
            if not self.accumulated and self._agree(time.monotonic() - start >= max_seconds):
                break
        if self.accumulated:
            pushed += self._push(pending)
        return {"terms": terms, "seconds": time.monotonic() - start, "fetched_bytes": fetched,
                "pushed_bytes": pushed, "staleness": ray.get(pending)}

    def _fetch(self) -> int:
        import ray

        replies = ray.get([shard.fetch.remote() for shard in self.shards])
        for k, (version, flat) in enumerate(replies):
            self.versions[k] = version
            scatter(flat, self.pieces[k], self.params)
        self.since_fetch = 0
        return sum(flat.nbytes for _, flat in replies)

    def _push(self, pending: list) -> int:
        grads = [cast(torch.Tensor, p.grad) for p in self.params]  # every parameter has one after a backward
        size = 0
        for k, shard in enumerate(self.shards):
            flat = gather(grads, self.pieces[k])
            pending.append(shard.push.remote(flat, self.versions[k]))
            size += flat.nbytes
        for p in self.params:
            p.grad = None
        self.accumulated = 0
        return size


class BlockRank(Replica):
    """A Ray actor: rank `rank` of a model-parallel replica. It holds its block of every stage, fetches from and
    pushes to the shards of its block only, and steps in lockstep with its replica's other ranks: rank 0 reads the
    replica's data and broadcasts each batch, the objective's terms are summed over the ranks, and rank 0 says
    where a chunk ends. `join` must run first (on every rank: they meet there)."""

    def __init__(self, config: Config, source: BatchSource | None, index: int, replicas: int, start_step: int,
                 grid: tuple[int, int], rank: int, shards: list, pieces: list[list[Piece]], fetch_every: int,
                 push_every: int, threads: int, device: torch.device = CPU) -> None:
        torch.set_num_threads(threads)
        self.device = rank_device(device, 0)  # on CUDA, the GPU Ray gave this actor: the only one it sees
        m = config.model
        with self.device:
            network = BlockNetwork(m, grid, rank)
        network.set_precision(config.train.precision)
        stream, seed = (replica_stream(cast(BatchSource, source), config.train.seed, index, replicas) if rank == 0
                        else (None, config.train.seed))
        batches = SharedBatches(stream, (m.channels, m.input_size, m.input_size)).batches(
            config.train.batch_size, seed, start_step)
        self._setup(network, batches, shards, pieces, fetch_every, push_every)
        self.rank, self.world = rank, grid[0] * grid[1]
        self.store: dist.Store | None = None

    def open_rendezvous(self) -> dict:
        """On rank 0, on a cluster: a TCP store on this node's address and a port the system picks, where the
        replica's ranks meet (its address goes to the others through the driver)."""
        import ray

        host = ray.util.get_node_ip_address()
        self.store = dist.TCPStore(host, 0, self.world, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
        return {"host": host, "port": self.store.port}

    def join(self, rendezvous: dict) -> None:
        """Join the replica's process group (gloo, or NCCL on GPUs): through a file on this machine (a local run:
        sockets on loopback only), or through rank 0's TCP store (a cluster: gloo and NCCL on the interfaces
        GLOO_SOCKET_IFNAME and NCCL_SOCKET_IFNAME name, else those they find themselves)."""
        if "file" in rendezvous:
            join_group(self.rank, self.world, rendezvous["file"], torch.get_num_threads(), self.device)
            return
        store = self.store or dist.TCPStore(rendezvous["host"], rendezvous["port"], self.world, is_master=False,
                                            timeout=TIMEOUT)
        init_group(self.device, self.rank, self.world, store, TIMEOUT)

    def _terms(self, outputs: list[StageOutput]) -> dict[str, float]:
        return summed_terms(outputs)

    def _agree(self, stop: bool) -> bool:
        return rank0_decides(stop)
