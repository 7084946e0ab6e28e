"""A model-parallel network equals the single-process one in float64 (spawned ranks, gloo, loopback).

One spawn per grid runs every check: each sublayer's outputs, the objective, the gradient to the
input and the gathered weight gradients for `tiny` and a `small`-like shape (filter stride 2 in
stage 2), then 5 Adagrad steps whose gathered weights equal the single-process run's.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from catneuron.model.config import PRESETS, StageConfig, replace
from catneuron.model.network import Network
from catneuron.parallel.grid import plan
from catneuron.parallel.halo import Exchange
from catneuron.parallel.launch import run_ranks
from catneuron.parallel.network import BlockNetwork, block_of
from catneuron.parallel.state import gather_gradients, gather_model, load_blocks
from catneuron.train.trainer import make_optimizer

SMALL_LIKE = replace(PRESETS["small"], model={"stages": (
    StageConfig(maps=3, kernel=8, stride=1, pool=3, lcn_size=5),
    StageConfig(maps=4, kernel=6, stride=2, pool=3, lcn_size=5),
    StageConfig(maps=3, kernel=3, stride=1, pool=2, lcn_size=3),
)})
CONFIGS = {"tiny": PRESETS["tiny"], "small-like": SMALL_LIKE}
# 7x7 windows on 16x16 images cut 1x4: the last filter block's region reaches two input blocks away
FAR = replace(PRESETS["tiny"], model={"stages": (
    StageConfig(maps=3, kernel=7, stride=1, pool=3, lcn_size=5),
    StageConfig(maps=3, kernel=3, stride=1, pool=2, lcn_size=3),
)})


def _images(config, batch: int = 3) -> torch.Tensor:
    m = config.model
    return torch.rand(batch, m.channels, m.input_size, m.input_size, generator=torch.Generator().manual_seed(5))


def _check_equivalence(config, grid: tuple[int, int], rank: int) -> None:
    torch.manual_seed(0)
    whole = Network(config.model)
    images = _images(config).requires_grad_()
    outputs = whole(images)
    whole.loss(outputs).backward()

    net = BlockNetwork(config.model, grid, rank)
    load_blocks(net, make_optimizer(config, net.parameters()), whole.state_dict(), None)
    mine = _images(config).requires_grad_()
    block_outputs = net(mine)
    loss = net.loss(block_outputs)
    loss.backward()
    for p, out, block_out in zip(net.plans, outputs, block_outputs, strict=True):
        filt, pool = p.filter.block(rank), p.pool.block(rank)
        torch.testing.assert_close(block_out.filter, out.filter[(..., *filt.slices)], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(block_out.pool, out.pool[(..., *pool.slices)], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(block_out.norm, out.norm[(..., *pool.slices)], rtol=1e-12, atol=1e-12)
        for term in ("reconstruction", "sparsity"):
            total = getattr(block_out, term).detach().clone()
            dist.all_reduce(total)
            torch.testing.assert_close(total, getattr(out, term).detach(), rtol=1e-12, atol=0)
    total = loss.detach().clone()
    dist.all_reduce(total)
    torch.testing.assert_close(total, whole.loss(outputs).detach(), rtol=1e-12, atol=0)
    dist.all_reduce(mine.grad)
    torch.testing.assert_close(mine.grad, images.grad, rtol=1e-10, atol=1e-12)
    grads = gather_gradients(net)
    if rank == 0:
        for name, p in whole.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-12)


def _check_adagrad(config, grid: tuple[int, int], rank: int, steps: int = 5) -> None:
    """5 Adagrad steps; `config` takes 16x16 grey images (tiny's)."""
    torch.manual_seed(0)
    whole = Network(config.model)
    net = BlockNetwork(config.model, grid, rank)
    optimizer = make_optimizer(config, net.parameters())
    load_blocks(net, optimizer, whole.state_dict(), None)
    whole_optimizer = make_optimizer(config, whole.parameters())
    for step in range(steps):
        images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(step))
        for model, opt in ((whole, whole_optimizer), (net, optimizer)):
            opt.zero_grad()
            model.loss(model(images)).backward()
            opt.step()
    weights = gather_model(net)
    if rank == 0:
        for name, p in whole.named_parameters():
            torch.testing.assert_close(weights[name], p.detach(), rtol=1e-10, atol=0)


def _check_all(rank: int, world: int, grid: tuple[int, int]) -> None:
    torch.set_default_dtype(torch.float64)
    for config in CONFIGS.values():
        _check_equivalence(config, grid, rank)
    _check_adagrad(PRESETS["tiny"], grid, rank)
    dist.barrier()


@pytest.mark.slow
@pytest.mark.parametrize("grid", [(1, 2), (2, 1), (2, 2), (1, 3)])
def test_blocks_compute_the_single_process_network(grid):
    run_ranks(_check_all, grid[0] * grid[1], (grid,))


def _check_far(rank: int, world: int, grid: tuple[int, int]) -> None:
    torch.set_default_dtype(torch.float64)
    _check_equivalence(FAR, grid, rank)
    _check_adagrad(FAR, grid, rank)
    dist.barrier()


@pytest.mark.slow
def test_blocks_whose_halos_reach_two_blocks_away_compute_the_single_process_network():
    stage = plan(FAR.model, (1, 4))[0]
    far = [q for r in range(4) for q, _ in Exchange.plan(stage.input, stage.filtering.regions(), r, 0).receives
           if abs(q - r) >= 2]
    assert far, "no halo reaches past the adjacent block: the test proves nothing"
    run_ranks(_check_far, 4, ((1, 4),))


def test_block_rows_round_trip():
    whole = torch.arange(5 * 7 * 2.0).reshape(35, 2)
    block = block_of(whole, (5, 7), (1, 3), (2, 6))
    assert block.shape == (8, 2)
    assert block[0].tolist() == whole[7 + 2].tolist() and block[-1].tolist() == whole[2 * 7 + 5].tolist()


def _messages(rank: int, world: int, grid: tuple[int, int]) -> list | None:
    """Every halo message of this rank in one forward and backward step, in the order posted: [kind, peer, tag,
    shape]; rank 0 returns every rank's."""
    import catneuron.parallel.halo as halo_module

    swap, posted = halo_module._swap, []

    def logged(sends, receives, tag):
        posted.extend(["send", q, tag, list(t.shape)] for q, t in sends)
        posted.extend(["recv", q, tag, list(t.shape)] for q, t in receives)
        swap(sends, receives, tag)

    halo_module._swap = logged
    for config in CONFIGS.values():
        torch.manual_seed(0)
        net = BlockNetwork(config.model, grid, rank)
        net.loss(net(_images(config).requires_grad_())).backward()
    every: list = [None] * world
    dist.all_gather_object(every, posted)
    return every if rank == 0 else None


@pytest.mark.slow
def test_each_pair_of_ranks_posts_its_messages_in_the_same_order():
    """NCCL matches a pair's messages by order, not by tag (gloo's): on every pair, what one rank sends, in order
    (the forward's exchanges, then the backward's in the autograd engine's order), is what the other receives."""
    grid = (2, 2)
    posted = run_ranks(_messages, 4, (grid,))
    assert any(kind == "send" and tag % 4 == 1 for kind, _, tag, _ in posted[0])  # pooling halos among them
    for p in range(4):
        for q in range(4):
            sent = [(tag, shape) for kind, peer, tag, shape in posted[p] if kind == "send" and peer == q]
            received = [(tag, shape) for kind, peer, tag, shape in posted[q] if kind == "recv" and peer == p]
            assert sent == received, (p, q)
            assert (len(sent) > 0) == (p != q)
