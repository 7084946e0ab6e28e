"""The locally connected layer's three products as fused implicit-GEMM Triton kernels, for CUDA.

`catneuron.model.local` sweeps output rows with thousands of small `bmm` calls, right for a CPU and
slow on a GPU, where each launch costs microseconds. Here each product is one kernel launch, a grid
of tiles, each tile a small GEMM whose operands are gathered from the tensors in place: no patch
tensor, no temporary, float32 accumulation whatever the operands (float32 or bfloat16). The layouts
are `local`'s: images (height, width, channels, batch), weights and weight gradients (positions,
maps, fan-in) with fan-in ordered (window row, window column, channel), codes (positions, maps, batch).

- `contract` (encoder forward, decoder code-gradient): a tile is a block of positions times a block
  of the batch; per position codes[l] = weight[l] @ patch[l], fan-in the reduction, batch the wide
  dimension. A window's fan-in (dy, dx, c) lies at pixel offset dy * width * channels + (dx * channels
  + c) from its corner, so the patch is addressed, not copied, and every load is contiguous along the
  batch.
- `correlate` (both weight gradients): a tile is a block of positions times a block of fan-in,
  grad[l] = codes[l] @ patch[l]^T, the batch the reduction.
- `spread` (decoder forward, encoder input-gradient): overlapping windows must be summed. Rather than
  scatter with atomics, a tile owns a block of one image row's (column, channel) entries times a block
  of the batch and gathers every window that covers it: for each window row over the image row, the
  GEMM's reduction runs over (window, map) pairs, the weight entries a window does not reach masked to
  zero. Every output element is written once, deterministically.

Triton compiles each kernel on first use per dtype, map count and tile sizes (seconds), then caches it
on disk. With TRITON_INTERPRET=1 set before this module is imported and while the kernels run, they run
in Triton's interpreter on CPU tensors: how the tests check them where there is no GPU.

Each product is a `torch.library.triton_op` (`torch.ops.catneuron.contract`, `.spread`, `.correlate`) with its
autograd and its FLOP count registered: fake tensors skip the launch (the fake-CUDA tests run the whole CUDA path on
them), `FlopCounterMode` counts them, and torch.compile sees the kernels. Outputs are float32 whatever the operands,
as the CPU sweeps' are: bfloat16 operands are a speed trade, not a lower-precision result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton
from torch.utils.flop_counter import register_flop_formula

if TYPE_CHECKING:
    from catneuron.model.local_reference import Geometry


@dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of two). The defaults suit the paper's shapes; tests pass small ones to cross tiles."""

    positions: int = 2  # contract, correlate: positions per tile
    batch: int = 64  # contract, spread: batch per tile; correlate: batch per reduction step
    fan_in: int = 32  # contract: fan-in per reduction step; correlate: fan-in per tile
    row: int = 64  # spread: (column, channel) entries of an image row per tile
    windows: int = 0  # spread: windows per reduction step (0: enough for 32 (window, map) pairs)
    warps: int = 8  # per tile: with 4, ptxas spills registers in float32 for sm_90


@triton.jit
def _contract_kernel(image, weight, codes, n_pos, n_maps, n_fan, n_batch, out_w, row_len, win_row, col_step, row_step,
                     PRECISION: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_B: tl.constexpr):
    pos = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    maps = tl.arange(0, BLOCK_O)
    batch = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    pos_ok, maps_ok, batch_ok = pos < n_pos, maps < n_maps, batch < n_batch
    corner = (pos // out_w).to(tl.int64) * row_step + (pos % out_w) * col_step  # the window's first entry in (H, W, C)
    rows = pos.to(tl.int64)[:, None] * n_maps + maps[None, :]  # (position, map) row of weight and codes
    acc = tl.zeros((BLOCK_L, BLOCK_O, BLOCK_B), dtype=tl.float32)
    for p0 in range(0, n_fan, BLOCK_P):
        fan = p0 + tl.arange(0, BLOCK_P)
        dy = fan // win_row
        entry = corner[:, None] + (dy * row_len + fan - dy * win_row)[None, :]  # (position, fan-in) -> image entry
        x = tl.load(image + entry[:, :, None] * n_batch + batch[None, None, :],
                    mask=pos_ok[:, None, None] & (fan < n_fan)[None, :, None] & batch_ok[None, None, :], other=0.0)
        w = tl.load(weight + rows[:, :, None] * n_fan + fan[None, None, :],
                    mask=pos_ok[:, None, None] & maps_ok[None, :, None] & (fan < n_fan)[None, None, :], other=0.0)
        acc = tl.dot(w, x, acc, input_precision=PRECISION)
    tl.store(codes + rows[:, :, None] * n_batch + batch[None, None, :], acc.to(codes.dtype.element_ty),
             mask=pos_ok[:, None, None] & maps_ok[None, :, None] & batch_ok[None, None, :])


@triton.jit
def _correlate_kernel(image, codes, grad, n_pos, n_maps, n_fan, n_batch, out_w, row_len, win_row, col_step, row_step,
                      PRECISION: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr,
                     BLOCK_B: tl.constexpr):
    pos = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
    maps = tl.arange(0, BLOCK_O)
    fan = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pos_ok, maps_ok, fan_ok = pos < n_pos, maps < n_maps, fan < n_fan
    corner = (pos // out_w).to(tl.int64) * row_step + (pos % out_w) * col_step
    dy = fan // win_row
    entry = corner[:, None] + (dy * row_len + fan - dy * win_row)[None, :]
    rows = pos.to(tl.int64)[:, None] * n_maps + maps[None, :]
    acc = tl.zeros((BLOCK_L, BLOCK_O, BLOCK_P), dtype=tl.float32)
    for b0 in range(0, n_batch, BLOCK_B):
        batch = b0 + tl.arange(0, BLOCK_B)
        z = tl.load(codes + rows[:, :, None] * n_batch + batch[None, None, :],
                    mask=pos_ok[:, None, None] & maps_ok[None, :, None] & (batch < n_batch)[None, None, :], other=0.0)
        x = tl.load(image + entry[:, None, :] * n_batch + batch[None, :, None],
                    mask=pos_ok[:, None, None] & (batch < n_batch)[None, :, None] & fan_ok[None, None, :], other=0.0)
        acc = tl.dot(z, x, acc, input_precision=PRECISION)
    tl.store(grad + rows[:, :, None] * n_fan + fan[None, None, :], acc.to(grad.dtype.element_ty),
             mask=pos_ok[:, None, None] & maps_ok[None, :, None] & fan_ok[None, None, :])


@triton.jit
def _spread_kernel(codes, weight, image, n_maps, n_fan, n_batch, out_h, out_w, row_len, kernel, stride, win_row,
                   col_step, PRECISION: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_J: tl.constexpr,
                   BLOCK_O: tl.constexpr, BLOCK_B: tl.constexpr):
    h = tl.program_id(0)  # the image row
    q0 = tl.program_id(1) * BLOCK_Q
    q = q0 + tl.arange(0, BLOCK_Q)  # (column, channel) entries of the row
    batch = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    pair = tl.arange(0, BLOCK_J * BLOCK_O)  # the reduction: (window, map) pairs
    step, maps = pair // BLOCK_O, pair % BLOCK_O
    q_ok, batch_ok = q < row_len, batch < n_batch
    # Windows covering this row, and those covering this block of its entries (non-negative operands only:
    # Triton's integer division truncates where Python's floors).
    i_first = (tl.maximum(h - kernel + 1, 0) + stride - 1) // stride
    i_last = tl.minimum(h // stride, out_h - 1)
    j_first = (tl.maximum(q0 - win_row + 1, 0) + col_step - 1) // col_step
    j_last = tl.minimum((q0 + BLOCK_Q - 1) // col_step, out_w - 1)
    acc = tl.zeros((BLOCK_Q, BLOCK_B), dtype=tl.float32)
    for i in range(i_first, i_last + 1):
        dy = h - i * stride
        for j0 in range(j_first, j_last + 1, BLOCK_J):
            j = j0 + step
            pair_ok = (j <= j_last) & (maps < n_maps)
            rows = (i * out_w + j).to(tl.int64) * n_maps + maps  # (position, map) rows of weight and codes
            col = q[:, None] - (j * col_step)[None, :]  # the entry's column in the window row, where it lies in it
            a = tl.load(weight + rows[None, :] * n_fan + dy * win_row + col,
                        mask=q_ok[:, None] & pair_ok[None, :] & (col >= 0) & (col < win_row), other=0.0)
            z = tl.load(codes + rows[:, None] * n_batch + batch[None, :], mask=pair_ok[:, None] & batch_ok[None, :],
                        other=0.0)
            acc = tl.dot(a, z, acc, input_precision=PRECISION)
    tl.store(image + (h * row_len + q).to(tl.int64)[:, None] * n_batch + batch[None, :],
             acc.to(image.dtype.element_ty), mask=q_ok[:, None] & batch_ok[None, :])


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(1, n))


def _launch(kernel, grid: tuple[int, ...], *args, warps: int) -> None:
    """Launch a kernel through `wrap_triton`, so that fake tensors skip it and torch.compile sees it."""
    wrap_triton(kernel)[grid](*args, num_warps=warps)


def _check(*tensors: Tensor) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or dtypes.pop() not in (torch.float32, torch.bfloat16):
        raise TypeError(f"the Triton kernels take float32 or bfloat16 operands of one dtype, "
                        f"got {[t.dtype for t in tensors]}")


def _mode(dtype: torch.dtype, tf32: bool) -> str:
    """tl.dot's float32 mode: IEEE unless TF32 was asked for (`--precision tf32`, or torch's own matmul setting)."""
    return "tf32" if dtype != torch.float32 or tf32 else "ieee"


# The ops take the geometry as plain integers, (height, width, channels, kernel, stride, batch), and the tile sizes
# as (positions, batch, fan_in, row, windows, warps): torch.library's schemas hold no dataclasses.

@triton_op("catneuron::contract", mutates_args=())
def _contract_op(image: Tensor, weight: Tensor, shape: list[int], tiles: list[int], tf32: bool) -> Tensor:
    _check(image, weight)
    height, width, channels, kernel, stride, batch = shape
    image, weight = image.contiguous(), weight.contiguous()
    positions, maps, fan_in = weight.shape
    out_w = (width - kernel) // stride + 1
    codes = torch.empty(positions, maps, batch, dtype=torch.float32, device=image.device)
    grid = (triton.cdiv(positions, tiles[0]), triton.cdiv(batch, tiles[1]))
    _launch(_contract_kernel, grid, image, weight, codes, positions, maps, fan_in, batch, out_w, width * channels,
            kernel * channels, stride * channels, stride * width * channels, _mode(image.dtype, tf32),
            tiles[0], _pow2(maps), tiles[2], tiles[1], warps=tiles[5])
    return codes


@triton_op("catneuron::correlate", mutates_args=())
def _correlate_op(image: Tensor, codes: Tensor, shape: list[int], tiles: list[int], tf32: bool) -> Tensor:
    _check(image, codes)
    height, width, channels, kernel, stride, batch = shape
    image, codes = image.contiguous(), codes.contiguous()
    positions, maps, _ = codes.shape
    fan_in = kernel * kernel * channels
    out_w = (width - kernel) // stride + 1
    grad = torch.empty(positions, maps, fan_in, dtype=torch.float32, device=image.device)
    grid = (triton.cdiv(positions, tiles[0]), triton.cdiv(fan_in, tiles[2]))
    _launch(_correlate_kernel, grid, image, codes, grad, positions, maps, fan_in, batch, out_w, width * channels,
            kernel * channels, stride * channels, stride * width * channels, _mode(image.dtype, tf32),
            tiles[0], _pow2(maps), tiles[2], tiles[1], warps=tiles[5])
    return grad


@triton_op("catneuron::spread", mutates_args=())
def _spread_op(codes: Tensor, weight: Tensor, shape: list[int], tiles: list[int], tf32: bool) -> Tensor:
    _check(codes, weight)
    height, width, channels, kernel, stride, batch = shape
    codes, weight = codes.contiguous(), weight.contiguous()
    _, maps, fan_in = weight.shape
    out_h, out_w = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    image = torch.empty(height, width, channels, batch, dtype=torch.float32, device=codes.device)
    row = width * channels
    block_o = _pow2(maps)
    windows = tiles[4] or max(1, 32 // block_o)
    grid = (height, triton.cdiv(row, tiles[3]), triton.cdiv(batch, tiles[1]))
    _launch(_spread_kernel, grid, codes, weight, image, maps, fan_in, batch, out_h, out_w, row, kernel, stride,
            kernel * channels, stride * channels, _mode(codes.dtype, tf32), tiles[3], windows, block_o, tiles[1],
            warps=tiles[5])
    return image


def _as(grad: Tensor, like: Tensor) -> Tensor:
    return grad.to(like.dtype)


def _contract_context(ctx, inputs, output) -> None:
    image, weight, ctx.shape, ctx.tiles, ctx.tf32 = inputs
    ctx.save_for_backward(image, weight)


def _contract_backward(ctx, grad: Tensor):
    image, weight = ctx.saved_tensors
    grad = _as(grad, image)
    args = (ctx.shape, ctx.tiles, ctx.tf32)
    grad_image = _as(_spread_op(grad, weight, *args), image) if ctx.needs_input_grad[0] else None
    grad_weight = _as(_correlate_op(image, grad, *args), weight) if ctx.needs_input_grad[1] else None
    return grad_image, grad_weight, None, None, None


def _spread_context(ctx, inputs, output) -> None:
    codes, weight, ctx.shape, ctx.tiles, ctx.tf32 = inputs
    ctx.save_for_backward(codes, weight)


def _spread_backward(ctx, grad: Tensor):
    codes, weight = ctx.saved_tensors
    grad = _as(grad, codes)
    args = (ctx.shape, ctx.tiles, ctx.tf32)
    grad_codes = _as(_contract_op(grad, weight, *args), codes) if ctx.needs_input_grad[0] else None
    grad_weight = _as(_correlate_op(grad, codes, *args), weight) if ctx.needs_input_grad[1] else None
    return grad_codes, grad_weight, None, None, None


def _correlate_context(ctx, inputs, output) -> None:
    image, codes, ctx.shape, ctx.tiles, ctx.tf32 = inputs
    ctx.save_for_backward(image, codes)


def _correlate_backward(ctx, grad: Tensor):
    image, codes = ctx.saved_tensors
    grad = _as(grad, image)
    args = (ctx.shape, ctx.tiles, ctx.tf32)
    grad_image = _as(_spread_op(codes, grad, *args), image) if ctx.needs_input_grad[0] else None
    grad_codes = _as(_contract_op(image, grad, *args), codes) if ctx.needs_input_grad[1] else None
    return grad_image, grad_codes, None, None, None


torch.library.register_autograd("catneuron::contract", _contract_backward, setup_context=_contract_context)
torch.library.register_autograd("catneuron::spread", _spread_backward, setup_context=_spread_context)
torch.library.register_autograd("catneuron::correlate", _correlate_backward, setup_context=_correlate_context)


def _product_flops(shape: list[int], positions: int, maps: int) -> int:
    """2 * positions * maps * fan-in * batch: every product is one multiply-add per (position, map, fan-in, image)."""
    _, _, channels, kernel, _, batch = shape
    return 2 * positions * maps * kernel * kernel * channels * batch


@register_flop_formula(torch.ops.catneuron.contract)
def _contract_flops(image_shape, weight_shape, shape, tiles, tf32, *args, out_shape=None, **kwargs) -> int:
    return _product_flops(shape, weight_shape[0], weight_shape[1])


@register_flop_formula(torch.ops.catneuron.spread)
def _spread_flops(codes_shape, weight_shape, shape, tiles, tf32, *args, out_shape=None, **kwargs) -> int:
    return _product_flops(shape, weight_shape[0], weight_shape[1])


@register_flop_formula(torch.ops.catneuron.correlate)
def _correlate_flops(image_shape, codes_shape, shape, tiles, tf32, *args, out_shape=None, **kwargs) -> int:
    return _product_flops(shape, codes_shape[0], codes_shape[1])


def _args(geo: Geometry, blocks: Blocks, tf32: bool | None) -> tuple[list[int], list[int], bool]:
    shape = [geo.height, geo.width, geo.channels, geo.kernel, geo.stride, geo.batch]
    tiles = [blocks.positions, blocks.batch, blocks.fan_in, blocks.row, blocks.windows, blocks.warps]
    default = geo.tf32 or torch.get_float32_matmul_precision() != "highest"
    return shape, tiles, default if tf32 is None else tf32


def contract(image: Tensor, weight: Tensor, geo: Geometry, blocks: Blocks = Blocks(), tf32: bool | None = None
             ) -> Tensor:
    """codes[l] = weight[l] @ patch[l]: (H, W, C, B), (L, O, P) -> float32 (L, O, B), as `local_reference.contract`.
    `tf32` None: TF32 where the geometry asks for it (`--precision tf32`) or torch's own float32 matmuls may use it."""
    return torch.ops.catneuron.contract(image, weight, *_args(geo, blocks, tf32))


def correlate(image: Tensor, codes: Tensor, geo: Geometry, blocks: Blocks = Blocks(), tf32: bool | None = None
              ) -> Tensor:
    """grad[l] = codes[l] @ patch[l]^T: (H, W, C, B), (L, O, B) -> float32 (L, O, P), as `local_reference.correlate`."""
    return torch.ops.catneuron.correlate(image, codes, *_args(geo, blocks, tf32))


def spread(codes: Tensor, weight: Tensor, geo: Geometry, blocks: Blocks = Blocks(), tf32: bool | None = None
           ) -> Tensor:
    """The adjoint of `contract`: windows weight[l]^T @ codes[l] summed into a float32 image, as
    `local_reference.spread`."""
    return torch.ops.catneuron.spread(codes, weight, *_args(geo, blocks, tf32))
