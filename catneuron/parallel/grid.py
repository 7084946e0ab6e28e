"""The geometry of model parallelism: every stage's grids of positions cut into the same R x C grid of blocks.

A replica runs as R*C ranks; rank `i * C + j` owns block (i, j) of every grid: the stage's input (the
image, or the previous stage's output), its filter outputs and its pooled (and normalized) outputs.
Each grid is cut as evenly as it can be on its own (uneven blocks differ by one row). A windowed
sublayer reads, for its block of outputs, a *region* of its input grid: its own input block and strips
of the blocks around it (the halo), which reach as far as the windows do: past the adjacent blocks when
blocks are thinner than the halo (the paper's 13 x 13 grid on its 200 x 200 images). A grid is refused
only where a block would be empty: no grid may have more blocks along an axis than positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from catneuron.errors import UserError
from catneuron.model.config import ModelConfig, stage_shapes

Span = tuple[int, int]  # [start, stop) along one axis


def split(size: int, parts: int) -> tuple[int, ...]:
    """Boundaries of `parts` near-equal blocks of `size` positions (the first blocks are the thinner)."""
    return tuple(i * size // parts for i in range(parts + 1))


@dataclass(frozen=True)
class Block:
    """A rectangle of a grid: rows [rows[0], rows[1]), columns [cols[0], cols[1])."""

    rows: Span
    cols: Span

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]

    @property
    def empty(self) -> bool:
        return min(self.shape) <= 0

    def intersect(self, other: Block) -> Block:
        return Block((max(self.rows[0], other.rows[0]), min(self.rows[1], other.rows[1])),
                     (max(self.cols[0], other.cols[0]), min(self.cols[1], other.cols[1])))

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(*self.rows), slice(*self.cols)

    def within(self, outer: Block) -> tuple[slice, slice]:
        """Slices that pick this rectangle out of a tensor holding `outer`."""
        return (slice(self.rows[0] - outer.rows[0], self.rows[1] - outer.rows[0]),
                slice(self.cols[0] - outer.cols[0], self.cols[1] - outer.cols[0]))


@dataclass(frozen=True)
class Partition:
    """A grid cut into blocks by row boundaries and column boundaries."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def even(cls, height: int, width: int, grid: tuple[int, int]) -> Partition:
        return cls(split(height, grid[0]), split(width, grid[1]))

    @property
    def grid(self) -> tuple[int, int]:
        return len(self.rows) - 1, len(self.cols) - 1

    @property
    def size(self) -> tuple[int, int]:
        return self.rows[-1], self.cols[-1]

    def block(self, rank: int) -> Block:
        i, j = divmod(rank, self.grid[1])
        return Block((self.rows[i], self.rows[i + 1]), (self.cols[j], self.cols[j + 1]))

    def blocks(self) -> list[Block]:
        return [self.block(r) for r in range(self.grid[0] * self.grid[1])]


def valid_reach(kernel: int, stride: int) -> Callable[[Span, int], Span]:
    """Input span read by outputs [a, b) of unpadded windows (local filters, L2 pooling)."""
    return lambda out, size: (out[0] * stride, (out[1] - 1) * stride + kernel)


def same_reach(halo: int) -> Callable[[Span, int], Span]:
    """Input span read by outputs [a, b) of zero-padded centred windows (LCN), clipped to the grid."""
    return lambda out, size: (max(0, out[0] - halo), min(size, out[1] + halo))


@dataclass(frozen=True)
class Windows:
    """One windowed sublayer: its input grid's blocks, its output grid's blocks, and what an output span reads."""

    name: str
    source: Partition
    target: Partition
    reach: Callable[[Span, int], Span]
    halo: int

    def region(self, rank: int) -> Block:
        """The part of the input grid that `rank`'s block of outputs reads."""
        out = self.target.block(rank)
        return Block(self.reach(out.rows, self.source.size[0]), self.reach(out.cols, self.source.size[1]))

    def regions(self) -> tuple[Block, ...]:
        return tuple(self.region(r) for r in range(len(self.target.blocks())))


@dataclass(frozen=True)
class StagePlan:
    """The blocks of one stage's grids and its three windowed sublayers."""

    index: int
    input: Partition
    filter: Partition
    pool: Partition
    filtering: Windows
    pooling: Windows
    norm: Windows | None


def layout(model: ModelConfig, grid: tuple[int, int]) -> list[StagePlan]:
    """Every stage's blocks on an R x C grid, unchecked (`plan` checks them)."""
    plans = []
    for shape, cfg in zip(stage_shapes(model), model.stages, strict=True):
        inp = Partition.even(shape.in_size, shape.in_size, grid)
        filt = Partition.even(shape.filter_size, shape.filter_size, grid)
        pool = Partition.even(shape.pool_size, shape.pool_size, grid)
        r = cfg.lcn_size // 2
        plans.append(StagePlan(
            shape.index, inp, filt, pool,
            Windows("filter", inp, filt, valid_reach(cfg.kernel, cfg.stride), cfg.kernel - cfg.stride),
            Windows("pool", filt, pool, valid_reach(cfg.pool, cfg.pool_stride), cfg.pool - cfg.pool_stride),
            Windows("norm", pool, pool, same_reach(r), r) if model.lcn else None))
    return plans


def _grids(model: ModelConfig) -> list[tuple[int, str, int]]:
    """(stage, grid name, positions along a side) of every stage's grids, in network order."""
    return [(shape.index, name, size) for shape in stage_shapes(model)
            for name, size in (("input", shape.in_size), ("filter", shape.filter_size), ("pool", shape.pool_size))]


def plan(model: ModelConfig, grid: tuple[int, int]) -> list[StagePlan]:
    """Every stage's blocks on an R x C grid, or a UserError naming the first grid that would have empty blocks
    and the largest grid that works (the input is square, so rows and columns obey the same limit)."""
    grids = _grids(model)
    largest = min(size for _, _, size in grids)
    parts = max(grid)
    for stage, name, size in grids:
        if size < parts:
            raise UserError(f"--partitions {grid[0]}x{grid[1]}: stage {stage} {name}: its {size} positions "
                            f"across cannot be cut into {parts} non-empty blocks; the largest grid that works is "
                            f"{min(grid[0], largest)}x{min(grid[1], largest)}")
    return layout(model, grid)


def parse_grid(text: str) -> tuple[int, int]:
    """`--partitions RxC` -> (R, C)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--partitions {text}: expected ROWSxCOLUMNS, e.g. 2x2") from None
    if rows < 1 or cols < 1:
        raise UserError(f"--partitions {text}: rows and columns must be at least 1")
    return rows, cols
