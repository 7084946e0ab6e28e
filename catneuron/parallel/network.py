"""One rank's part of a model-parallel network: the model's own Stage modules, built on the rank's regions.

Rank r's stage holds the weights of its block of filter positions only (the same layout as the whole
layer's, (positions of the block, maps, fan-in)), reads the region of its input grid that those
filters see (`halo`), pools a region of its filter outputs, normalizes its block of pooled outputs
with two halo exchanges and sigma averaged over the whole image (`sum_all`), and reconstructs its
input block from every decoder that paints over it (`halo_sum`). Its objective terms are its share:
the terms summed over ranks are the single-process network's.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from catneuron.model.config import ModelConfig, stage_shapes
from catneuron.model.lcn import LocalContrastNorm
from catneuron.model.network import StageNetwork, standardize
from catneuron.model.stage import Stage, StageOutput
from catneuron.parallel.grid import StagePlan, plan
from catneuron.parallel.halo import Exchange, halo, halo_sum, sum_all


class BlockNeighbours:
    """A stage's exchanges on one rank (catneuron.model.stage.Neighbours)."""

    def __init__(self, stage: StagePlan, rank: int) -> None:
        tag = 4 * stage.index
        self.filtering = Exchange.plan(stage.input, stage.filtering.regions(), rank, tag)
        self.pooling = Exchange.plan(stage.filter, stage.pooling.regions(), rank, tag + 1)
        self.norming = None if stage.norm is None else Exchange.plan(stage.pool, stage.norm.regions(), rank, tag + 2)
        self.pool_positions = math.prod(stage.pool.size)

    def filter_region(self, x: Tensor) -> Tensor:
        return halo(x, self.filtering)

    def pool_region(self, h: Tensor) -> Tensor:
        return halo(h, self.pooling)

    def normalize(self, norm: LocalContrastNorm | nn.Identity, pooled: Tensor) -> Tensor:
        """LCN of the block: v from the region around it, sigma from v's region, the floor from every block."""
        ex = self.norming
        if ex is None:  # the no-LCN ablation
            return norm(pooled)
        assert isinstance(norm, LocalContrastNorm)
        block = (..., *ex.own.within(ex.region))
        region = halo(pooled, ex)
        coverage = norm.coverage(region)
        v = norm.centre(region, coverage)[block]
        sigma = norm.deviation(halo(v, ex), coverage)[block]
        sigma_mean = sum_all(sigma.sum(dim=(1, 2, 3), keepdim=True)) / self.pool_positions
        return norm.divide(v, sigma, sigma_mean)

    def paint_sum(self, painted: Tensor) -> Tensor:
        return halo_sum(painted, self.filtering)


class BlockNetwork(StageNetwork):
    """Rank `rank`'s part of `Network(config)` on an R x C grid of blocks; state_dict keys as Network's."""

    def __init__(self, config: ModelConfig, grid: tuple[int, int], rank: int) -> None:
        super().__init__()
        self.config, self.grid, self.rank = config, grid, rank
        self.plans = plan(config, grid)
        self.stages = nn.ModuleList(
            Stage(sh.in_channels, p.filtering.region(rank).shape, cfg, config.sparsity, config.eps, config.lcn,
                  config.encoder)
            for sh, cfg, p in zip(stage_shapes(config), config.stages, self.plans, strict=True))
        self.neighbours = [BlockNeighbours(p, rank) for p in self.plans]

    def forward(self, images: Tensor, objective: bool = True) -> list[StageOutput]:
        """Every rank gets the whole batch of images; outputs are the rank's blocks."""
        x = standardize(images)[(..., *self.plans[0].input.block(self.rank).slices)]
        outputs = []
        for stage, neighbours in zip(self.stages, self.neighbours, strict=True):
            out = stage(x, objective, neighbours)
            outputs.append(out)
            x = out.norm.detach() if self.config.detach_stages else out.norm
        return outputs

    def param_block(self, name: str, rank: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """For parameter `name` (stages.<i>.encoder.weight ...): its stage's filter grid (rows, columns) and
        `rank`'s block of it (rows span, columns span); a weight's first axis is the grid's positions, row-major."""
        stage = self.plans[int(name.split(".")[1])]
        block = stage.filter.block(rank)
        return stage.filter.size, block.rows, block.cols


def block_of(full: Tensor, grid: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
    """The rows of a (positions, ...) tensor that belong to a block of its (grid) positions, as a new tensor."""
    return full.unflatten(0, grid)[rows[0]:rows[1], cols[0]:cols[1]].flatten(0, 1).clone()


def place_block(full: Tensor, block: Tensor, grid: tuple[int, int], rows: tuple[int, int],
                cols: tuple[int, int]) -> None:
    """Write a block's rows into a (positions, ...) tensor: the inverse of `block_of`."""
    full.unflatten(0, grid)[rows[0]:rows[1], cols[0]:cols[1]] = block.unflatten(
        0, (rows[1] - rows[0], cols[1] - cols[0]))
