"""The halo exchange between spawned ranks (gloo, loopback): what each rank receives, and its adjoint.

Each grid is one spawn; the checks run inside the ranks (torch.testing messages come back as the failure).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from catneuron.parallel.grid import Partition, Windows, same_reach, valid_reach
from catneuron.parallel.halo import Exchange, halo, halo_sum, sum_all
from catneuron.parallel.launch import run_ranks

pytestmark = pytest.mark.slow  # spawned ranks: each imports torch


def _cases(grid: tuple[int, int]) -> list[Windows]:
    source = Partition.even(13, 14, grid)
    return [Windows("filter", source, Partition.even(10, 11, grid), valid_reach(4, 1), 3),
            Windows("strided", source, Partition.even(5, 5, grid), valid_reach(5, 2), 3),
            Windows("norm", source, source, same_reach(2), 2),
            Windows("own", source, source, same_reach(0), 0),  # no halo: nothing to swap
            Windows("far", source, source, same_reach(6), 6)]  # past the adjacent block on 1x3


def _check_exchange(rank: int, world: int, grid: tuple[int, int]) -> None:
    torch.set_default_dtype(torch.float64)
    for tag, windows in enumerate(_cases(grid)):
        ex = Exchange.plan(windows.source, windows.regions(), rank, tag)
        whole = torch.randn(2, 3, 13, 14, generator=torch.Generator().manual_seed(tag))
        x = whole[(..., *ex.own.slices)].clone().requires_grad_()
        y = torch.randn(2, 3, *ex.region.shape, generator=torch.Generator().manual_seed(100 * tag + rank))
        fx = halo(x, ex)
        torch.testing.assert_close(fx, whole[(..., *ex.region.slices)], rtol=0, atol=0)
        fty = halo_sum(y, ex)
        left, right = sum_all((fx * y).sum()), sum_all((x * fty).sum())
        torch.testing.assert_close(left, right, rtol=1e-12, atol=0)
        (grad,) = torch.autograd.grad(fx, x, y)
        torch.testing.assert_close(grad, fty, rtol=0, atol=0)
        # The adjoint's backward is the exchange itself.
        y.requires_grad_()
        (back,) = torch.autograd.grad(halo_sum(y, ex), y, x.detach())
        torch.testing.assert_close(back, fx.detach(), rtol=0, atol=0)
    dist.barrier()


@pytest.mark.parametrize("grid", [(1, 2), (2, 2), (1, 3)])
def test_exchange_is_the_crop_and_its_adjoint_is_exact(grid):
    run_ranks(_check_exchange, grid[0] * grid[1], (grid,))


def test_the_far_case_reaches_two_blocks_away():
    far = _cases((1, 3))[-1]
    exchanges = [Exchange.plan(far.source, far.regions(), r, 0) for r in range(3)]
    assert [q for r, ex in enumerate(exchanges) for q, _ in ex.receives if abs(q - r) == 2] == [2, 0]
