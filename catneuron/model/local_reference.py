"""The layer's products on any device: sweeps of `bmm` over output rows (or image rows), the reference the
compiled and fused kernels are checked against.

Images are kept batch-last and channels-last, (height, width, channels, batch). For one output row and one
window row `dy`, the windows of all the row's positions are then a strided *view* of the image,
(positions, k*channels, batch), each block contiguous and overlapping its neighbour's, which `bmm` reads without
a copy. The products that read windows (the encoder's forward, the decoder's gradient to its codes, both weight
gradients) are sweeps over output rows and window rows: one `bmm` per (row, window rows) with the row's positions
as its batch. Where one window row is small (few positions or channels), several are copied into a buffer of
about `tile_bytes` so each `bmm` does more work. The product that sums overlapping windows (the decoder, the
gradient to the input) is a sweep over image rows instead: one `bmm` per image row contracts over every
(covering output row, map) pair, so it multiplies ceil(k / stride) times more per value it writes. No patch
tensor of the whole batch is ever built: memory is the weights, the activations and a few buffers of a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from catneuron.model.workers import run_rows

TILE_BYTES = 1 << 20  # about one core's L2 cache


def output_size(input_size: int, kernel_size: int, stride: int) -> int:
    """Side of the grid of window positions along one axis (no padding)."""
    return (input_size - kernel_size) // stride + 1


def pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class Geometry:
    """Where the windows of a layer lie in a (height, width, channels, batch) image."""

    height: int
    width: int
    channels: int
    kernel: int
    stride: int
    batch: int
    tile_bytes: int
    element_size: int
    tf32: bool = False  # float32 products as TF32 where the device can (CUDA's Triton kernels); the sweeps ignore it

    @property
    def out_h(self) -> int:
        return output_size(self.height, self.kernel, self.stride)

    @property
    def out_w(self) -> int:
        return output_size(self.width, self.kernel, self.stride)

    @property
    def row_fan_in(self) -> int:
        """Fan-in of one window row: k * channels."""
        return self.kernel * self.channels

    @property
    def reach(self) -> int:
        """Output rows (or columns) whose windows can cover one image row (column): ceil(k / stride)."""
        return -(-self.kernel // self.stride)

    def covering(self, y: int) -> range:
        """The output rows whose windows cover image row `y` (empty for a row below the last window)."""
        return range(max(0, -(-(y - self.kernel + 1) // self.stride)), min(self.out_h, y // self.stride + 1))

    @property
    def tile(self) -> int:
        """Window rows per `bmm`: as many as fit `tile_bytes`, at least one (then no copy is made)."""
        row_bytes = self.out_w * self.row_fan_in * self.batch * self.element_size
        return max(1, min(self.kernel, self.tile_bytes // row_bytes))

    def tiles(self, rows: range | None = None) -> Iterator[tuple[int, int, slice]]:
        """(output row, first window row, fan-in columns) of every `bmm` of a sweep over `rows` (default all)."""
        tile = self.tile
        for y in range(self.out_h) if rows is None else rows:
            for dy in range(0, self.kernel, tile):
                yield y, dy, slice(dy * self.row_fan_in, min(dy + tile, self.kernel) * self.row_fan_in)


def windows(image: Tensor, geo: Geometry, y: int, dy: int, columns: slice) -> Tensor:
    """(out_w, fan-in columns, batch): the windows of output row `y` from window row `dy` on.

    One window row is a view of `image`; several are copied into a fresh contiguous tensor.
    """
    rows = (columns.stop - columns.start) // geo.row_fan_in
    pitch = geo.width * geo.channels * geo.batch
    view = image.as_strided((geo.out_w, rows, geo.row_fan_in, geo.batch),
                            (geo.stride * geo.channels * geo.batch, pitch, geo.batch, 1),
                            image.storage_offset() + (y * geo.stride + dy) * pitch)
    return view[:, 0] if rows == 1 else view.reshape(geo.out_w, -1, geo.batch)


def accumulator(operands: torch.dtype) -> torch.dtype:
    """The type products accumulate in: float32 for bfloat16 operands, else the operands' own."""
    return torch.promote_types(operands, torch.float32)


def multiply_into(out: Tensor, a: Tensor, b: Tensor, accumulate: bool) -> None:
    """out = a @ b, or out += a @ b, batched. Written in place when `out` is contiguous and of the operands'
    type; otherwise through a temporary (a strided slice, or bfloat16 operands into a float32 `out`)."""
    if a.dtype == out.dtype and out.is_contiguous():
        if accumulate:
            out.baddbmm_(a, b)
        else:
            torch.bmm(a, b, out=out)
    elif accumulate:
        out += torch.bmm(a, b)
    else:
        out.copy_(torch.bmm(a, b))


def contract(image: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """codes[l] = weight[l] @ patch[l] for every position: (H, W, C, B), (L, O, P) -> (L, O, B)."""
    w = weight.unflatten(0, (geo.out_h, geo.out_w))
    codes = image.new_empty(weight.shape[0], weight.shape[1], geo.batch, dtype=accumulator(image.dtype))

    def rows(ys: range) -> None:
        for y, dy, cols in geo.tiles(ys):
            row = codes[y * geo.out_w:(y + 1) * geo.out_w]
            multiply_into(row, w[y, :, :, cols], windows(image, geo, y, dy, cols), accumulate=dy > 0)

    run_rows(rows, geo.out_h, image.device)
    return codes


def diagonal(weight: Tensor, geo: Geometry, y: int, cover: range) -> Tensor:
    """(out_w, len(cover), maps, k*channels): the window rows of `weight` that paint image row `y`, for every
    column of positions; cover[j] is the output row, y - cover[j] * stride the window row. A view of the
    contiguous (L, O, P) weight: from one covering row to the next, the output row goes up and the window
    row down, a constant step."""
    maps, fan, k, s = weight.shape[1], geo.row_fan_in, geo.kernel, geo.stride
    position = maps * k * fan
    step = geo.out_w * position - s * fan if len(cover) > 1 else 0  # k > s wherever two rows cover one
    return weight.as_strided((geo.out_w, len(cover), maps, fan), (position, step, k * fan, 1),
                             weight.storage_offset() + cover.start * geo.out_w * position + (y - cover.start * s) * fan)


def add_windows(row: Tensor, painted: Tensor, geo: Geometry) -> None:
    """Add (out_w, k*channels, batch) windows into an image row (width, channels, batch), overlaps summed: windows
    `reach` columns apart do not overlap, so each residue of the columns is one strided in-place add."""
    reach = geo.reach
    pitch = geo.stride * geo.channels * geo.batch
    for r in range(min(reach, geo.out_w)):
        count = len(range(r, geo.out_w, reach))
        row.as_strided((count, geo.row_fan_in, geo.batch), (reach * pitch, geo.batch, 1),
                       row.storage_offset() + r * pitch).add_(painted[r::reach])


def spread(codes: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """The adjoint of `contract`: sum over positions of weight[l]^T @ codes[l], folded into an image.

    Swept by image rows: row y is painted by the window rows of the (at most `reach`) output rows that
    cover it, so for each column of positions one product contracts over (covering rows) x maps, not
    maps alone, and writes the row's windows once. Each image row is written by one product, whichever
    worker runs it: the sum is the same on any number of threads (a resumed run equals an uninterrupted one)."""
    maps = codes.shape[1]
    weight = weight.contiguous()
    image = codes.new_zeros(geo.height, geo.width, geo.channels, geo.batch, dtype=accumulator(codes.dtype))
    by_column = codes.view(geo.out_h, geo.out_w, maps, geo.batch).transpose(0, 1).contiguous()

    def rows(ys: range) -> None:
        stack = weight.new_empty(geo.out_w * geo.reach * maps * geo.row_fan_in)
        painted = codes.new_empty(geo.out_w, geo.row_fan_in, geo.batch)
        for y in ys:
            cover = geo.covering(y)
            if not cover:
                continue
            pairs = len(cover) * maps
            w = stack[:geo.out_w * pairs * geo.row_fan_in].view(geo.out_w, len(cover), maps, geo.row_fan_in)
            w.copy_(diagonal(weight, geo, y, cover))
            c = by_column[:, cover.start:cover.stop].reshape(geo.out_w, pairs, geo.batch)
            torch.bmm(w.view(geo.out_w, pairs, geo.row_fan_in).mT, c, out=painted)
            add_windows(image[y], painted, geo)

    run_rows(rows, geo.height, codes.device)
    return image


def correlate(image: Tensor, codes: Tensor, geo: Geometry, out: Tensor | None = None) -> Tensor:
    """grad[l] = codes[l] @ patch[l]^T for every position: the gradient of `contract` and `spread` to
    their (L, O, P) weights, written into `out` where given (every entry is written)."""
    shape = (codes.shape[0], codes.shape[1], geo.kernel * geo.row_fan_in)
    grad = codes.new_empty(shape, dtype=accumulator(codes.dtype)) if out is None else out
    g = grad.unflatten(0, (geo.out_h, geo.out_w))

    def rows(ys: range) -> None:
        for y, dy, cols in geo.tiles(ys):
            row = codes[y * geo.out_w:(y + 1) * geo.out_w]
            multiply_into(g[y, :, :, cols], row, windows(image, geo, y, dy, cols).mT, accumulate=False)

    run_rows(rows, geo.out_h, image.device)
    return grad
