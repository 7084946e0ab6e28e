"""The halo exchange and its adjoint, as autograd functions, sums over all ranks, and rank 0's decisions.

`halo(x, exchange)` turns each rank's block of a grid, (B, C, h, w), into the region its windows read:
its own block plus the strips of its neighbours' blocks (corners included) that the region covers.
Its adjoint, `halo_sum`, takes a region back to blocks: each part of the region goes to its owner,
who adds it to its block. Each is the other's backward, so gradients through an exchange are exact:
halo gradients go back to the owners and are summed there, and a decoder that paints past its block
(reconstruction) has its paint summed by the owners of the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from catneuron.parallel.device import group_device
from catneuron.parallel.grid import Block, Partition


@dataclass(frozen=True)
class Exchange:
    """One rank's part of an exchange: it holds block `own` of `source` and needs `region`.

    `receives` are (peer, rectangle of `region` that the peer owns); `sends` are (peer, rectangle of
    `own` in the peer's region). Every rank derives the same plan from the geometry alone, so no sizes
    travel. `tag` keeps exchanges apart on the wire.
    """

    own: Block
    region: Block
    receives: tuple[tuple[int, Block], ...]
    sends: tuple[tuple[int, Block], ...]
    tag: int

    @classmethod
    def plan(cls, source: Partition, regions: tuple[Block, ...], rank: int, tag: int) -> Exchange:
        own = source.block(rank)
        receives = tuple((q, regions[rank].intersect(source.block(q))) for q in range(len(regions)) if q != rank)
        sends = tuple((q, regions[q].intersect(own)) for q in range(len(regions)) if q != rank)
        return cls(own, regions[rank], tuple(p for p in receives if not p[1].empty),
                   tuple(p for p in sends if not p[1].empty), tag)

    @property
    def mine(self) -> Block:
        """The part of the region this rank owns itself."""
        return self.region.intersect(self.own)


def _swap(sends: list[tuple[int, Tensor]], receives: list[tuple[int, Tensor]], tag: int) -> None:
    """Post every send and receive at once, then wait for all: no ordering between peers to deadlock on. One
    batch: NCCL runs a batch's operations together (posted one by one, a send to a peer that sends to us first
    would wait behind our own send on the GPU's stream); gloo posts them one by one."""
    ops = [dist.P2POp(dist.isend, t, peer, tag=tag) for peer, t in sends]
    ops += [dist.P2POp(dist.irecv, t, peer, tag=tag) for peer, t in receives]
    if ops:  # a rank whose windows reach no neighbour's block has nothing to swap
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def _gather(x: Tensor, ex: Exchange) -> Tensor:
    """Block -> region (the forward exchange)."""
    lead = x.shape[:-2]
    region = x.new_empty(*lead, *ex.region.shape)
    region[(..., *ex.mine.within(ex.region))] = x[(..., *ex.mine.within(ex.own))]
    sends = [(q, x[(..., *part.within(ex.own))].contiguous()) for q, part in ex.sends]
    receives = [(q, x.new_empty(*lead, *part.shape)) for q, part in ex.receives]
    _swap(sends, receives, ex.tag)
    for (_, part), (_, buf) in zip(ex.receives, receives, strict=True):
        region[(..., *part.within(ex.region))] = buf
    return region


def _scatter_add(region: Tensor, ex: Exchange) -> Tensor:
    """Region -> block, each part summed into its owner's block (the adjoint exchange)."""
    lead = region.shape[:-2]
    block = region.new_zeros(*lead, *ex.own.shape)
    block[(..., *ex.mine.within(ex.own))] += region[(..., *ex.mine.within(ex.region))]
    sends = [(q, region[(..., *part.within(ex.region))].contiguous()) for q, part in ex.receives]
    receives = [(q, region.new_empty(*lead, *part.shape)) for q, part in ex.sends]
    _swap(sends, receives, ex.tag)
    for (_, part), (_, buf) in zip(ex.sends, receives, strict=True):
        block[(..., *part.within(ex.own))] += buf
    return block


class _Halo(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, ex: Exchange) -> Tensor:
        ctx.ex = ex
        return _gather(x.contiguous(), ex)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _scatter_add(grad.contiguous(), ctx.ex), None


class _HaloSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, region: Tensor, ex: Exchange) -> Tensor:
        ctx.ex = ex
        return _scatter_add(region.contiguous(), ex)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _gather(grad.contiguous(), ctx.ex), None


def halo(x: Tensor, ex: Exchange) -> Tensor:
    """(..., block h, block w) -> (..., region h, region w): own block plus the neighbours' strips."""
    return _Halo.apply(x, ex)


def halo_sum(region: Tensor, ex: Exchange) -> Tensor:
    """(..., region h, region w) -> (..., block h, block w): the adjoint of `halo`, parts summed by their owners."""
    return _HaloSum.apply(region, ex)


class _SumAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor):
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


def sum_all(x: Tensor) -> Tensor:
    """The sum of `x` over all ranks, on every rank; its gradient is the sum of the ranks' gradients."""
    return _SumAll.apply(x)


def rank0_decides(decision: bool) -> bool:
    """Rank 0's `decision` on every rank: where ranks that step in lockstep stop, scan or end a chunk."""
    flag = torch.tensor([float(decision)], device=group_device())
    dist.broadcast(flag, 0)
    return bool(flag.item())
