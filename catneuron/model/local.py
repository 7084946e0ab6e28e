"""Locally connected layers: untied filters, one filter bank per output position.

PyTorch has no locally connected layer (pytorch#499), and the obvious `F.unfold` + `bmm` spends
its time copying patches, not multiplying. Here images are kept batch-last and channels-last,
(height, width, channels, batch). For one output row and one window row `dy`, the windows of all
the row's positions are then a strided *view* of the image, (positions, k*channels, batch), each
block contiguous and overlapping its neighbour's, which `bmm` reads without a copy. The products
that read windows (the encoder's forward, the decoder's gradient to its codes, both weight gradients)
are sweeps over output rows and window rows: one `bmm` per (row, window rows) with the row's
positions as its batch. Where one window row is small (few positions or channels), several are
copied into a buffer of about `tile_bytes` so each `bmm` does more work. The product that sums
overlapping windows (the decoder, the gradient to the input) is a sweep over image rows instead:
one `bmm` per image row contracts over every (covering output row, map) pair, so it multiplies
ceil(k / stride) times more per value it writes. No patch tensor of the whole batch is ever built:
memory is the weights, the activations and a few buffers of a row.

The fan-in of a filter is ordered (window row, window column, channel), as in Keras'
LocallyConnected2D.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor, nn

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


class Reused:
    """Memory for a layer's weight gradient, taken back step after step.

    A fresh tensor is new memory that the kernel maps page by page when it is first written: for the
    `paper` preset's 3.8 GB of weight gradients, ~900,000 page faults a step, seconds of system time
    (2 s per GB on this project's VM, more than the products' own time on some steps). The trainer frees
    the gradients every step (`zero_grad(set_to_none=True)`), so the next step's gradient takes the
    same memory back, provided no tensor holds it any more (the storage's use count); otherwise, or
    where PyTorch does not expose the count, it gets new memory, which is then the one kept.
    """

    def __init__(self) -> None:
        self._storage: torch.UntypedStorage | None = None
        self._lock = threading.Lock()  # two backward passes of one layer at once take different memory

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        with self._lock:
            kept = self._storage
            if (kept is not None and kept.device == device and kept.nbytes() == math.prod(shape) * dtype.itemsize
                    and hasattr(torch._C, "_storage_Use_Count") and torch._C._storage_Use_Count(kept._cdata) == 1):
                return torch.empty(0, dtype=dtype, device=device).set_(kept, 0, shape)
            tensor = torch.empty(shape, dtype=dtype, device=device)
            self._storage = tensor.untyped_storage()
            return tensor

    def __reduce__(self) -> tuple:
        return Reused, ()  # a copied or pickled layer starts with memory of its own


def _weight_grad(ops: ModuleType, image: Tensor, codes: Tensor, geo: Geometry, space: Reused) -> Tensor:
    """`ops.correlate`; the sweeps write into the layer's reused memory (CUDA's caching allocator reuses its own)."""
    if ops is not sys.modules[__name__]:
        return ops.correlate(image, codes, geo)
    shape = (codes.shape[0], codes.shape[1], geo.kernel * geo.row_fan_in)
    return correlate(image, codes, geo, space.empty(shape, accumulator(codes.dtype), codes.device))


def _products(device: torch.device, dtype: torch.dtype) -> ModuleType:
    """Where contract, spread and correlate run: `triton_local`'s fused kernels for float32 or bfloat16 on CUDA where
    Triton is installed (the `gpu` extra), this module's sweeps everywhere else; they are the kernels' reference."""
    if device.type == "cuda" and dtype in (torch.float32, torch.bfloat16) and importlib.util.find_spec("triton"):
        return importlib.import_module("catneuron.model.triton_local")
    return sys.modules[__name__]


class _Encode(torch.autograd.Function):
    """(H, W, C, B) image, (L, O, P) weights -> (L, O, B) codes; the products' operands of type `operands`."""

    @staticmethod
    def forward(ctx, image: Tensor, weight: Tensor, geo: Geometry, operands: torch.dtype, space: Reused) -> Tensor:
        ctx.geo, ctx.operands, ctx.space = geo, operands, space
        image, weight = image.to(operands), weight.to(operands)
        ctx.save_for_backward(image, weight)
        return _products(image.device, operands).contract(image, weight, geo)

    @staticmethod
    def backward(ctx, grad_codes: Tensor):
        image, weight = ctx.saved_tensors
        grad_codes = grad_codes.contiguous().to(ctx.operands)
        ops = _products(grad_codes.device, ctx.operands)
        grad_image = ops.spread(grad_codes, weight, ctx.geo) if ctx.needs_input_grad[0] else None
        grad_weight = _weight_grad(ops, image, grad_codes, ctx.geo, ctx.space) if ctx.needs_input_grad[1] else None
        return grad_image, grad_weight, None, None, None


class _Decode(torch.autograd.Function):
    """(L, O, B) codes, (L, O, P) weights -> (H, W, C, B) image, overlapping windows summed."""

    @staticmethod
    def forward(ctx, codes: Tensor, weight: Tensor, geo: Geometry, operands: torch.dtype, space: Reused) -> Tensor:
        ctx.geo, ctx.operands, ctx.space = geo, operands, space
        codes, weight = codes.to(operands), weight.to(operands)
        ctx.save_for_backward(codes, weight)
        return _products(codes.device, operands).spread(codes, weight, geo)

    @staticmethod
    def backward(ctx, grad_image: Tensor):
        codes, weight = ctx.saved_tensors
        grad_image = grad_image.contiguous().to(ctx.operands)
        ops = _products(grad_image.device, ctx.operands)
        grad_codes = ops.contract(grad_image, weight, ctx.geo) if ctx.needs_input_grad[0] else None
        grad_weight = _weight_grad(ops, grad_image, codes, ctx.geo, ctx.space) if ctx.needs_input_grad[1] else None
        return grad_codes, grad_weight, None, None, None


def to_batch_last(x: Tensor) -> Tensor:
    """(B, C, H, W) -> contiguous (H, W, C, B)."""
    return x.permute(2, 3, 1, 0).contiguous()


def from_batch_last(xt: Tensor) -> Tensor:
    """(H, W, C, B) -> contiguous (B, C, H, W)."""
    return xt.permute(3, 2, 0, 1).contiguous()


def check_input(layer: nn.Module, x: Tensor, channels: int, size: tuple[int, int], what: str) -> bool:
    """Whether `x` is batched, (B, C, H, W), or unbatched, (C, H, W); any other shape than the layer's
    `channels` x `size` raises a RuntimeError worded like nn.Conv2d's."""
    name = type(layer).__name__
    if x.dim() not in (3, 4):
        raise RuntimeError(f"{name}: expected 3D (unbatched) or 4D (batched) {what}, but got {what} of size: "
                           f"{list(x.shape)}")
    c, h, w = x.shape[-3:]
    if c != channels:
        raise RuntimeError(f"{name}: expected {what}{list(x.shape)} to have {channels} channels, but got {c} "
                           f"channels instead")
    if (h, w) != size:
        raise RuntimeError(f"{name}: built for {size[0]}x{size[1]} {what}, expected {what}{list(x.shape)} to be "
                           f"{size[0]}x{size[1]}, but got {h}x{w} instead (a locally connected layer has one "
                           f"filter bank per position, so its {what} size is fixed)")
    return x.dim() == 4


class _Local(nn.Module):
    """What the encoder and the decoder share: shapes, and a (positions, out_channels, fan_in) weight."""

    def __init__(self, in_channels: int, out_channels: int, input_size: int | tuple[int, int], kernel_size: int,
                 stride: int, tile_bytes: int) -> None:
        super().__init__()
        self.input_shape = pair(input_size)
        if kernel_size > min(self.input_shape):
            raise ValueError(f"kernel_size {kernel_size} is larger than input_size {input_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.tile_bytes = kernel_size, stride, tile_bytes
        # bfloat16: the products of float32 inputs take bfloat16 operands and accumulate in float32
        self.operand_dtype: torch.dtype | None = None
        self.out_shape = (output_size(self.input_shape[0], kernel_size, stride),
                          output_size(self.input_shape[1], kernel_size, stride))
        self.fan_in = kernel_size * kernel_size * in_channels
        positions = self.out_shape[0] * self.out_shape[1]
        self.weight = nn.Parameter(torch.empty(positions, out_channels, self.fan_in))
        self.grad_memory = Reused()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the initial weights: normal, with the spread `init_std` gives for the layer's role."""
        nn.init.normal_(self.weight, std=self.init_std())

    def init_std(self) -> float:
        """The initial weights' standard deviation (a model-parallel rank draws its block's rows with it)."""
        raise NotImplementedError

    def operands(self, dtype: torch.dtype) -> torch.dtype:
        """The type the products of `dtype` inputs take their operands in: `operand_dtype` for float32 inputs."""
        return self.operand_dtype if self.operand_dtype is not None and dtype == torch.float32 else dtype

    def geometry(self, batch: int, dtype: torch.dtype) -> Geometry:
        """Where the windows lie, for a batch of `batch` inputs of type `dtype`."""
        return Geometry(*self.input_shape, self.in_channels, self.kernel_size, self.stride, batch,
                        self.tile_bytes, torch.finfo(self.operands(dtype)).bits // 8)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_shape}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}")


class LocallyConnected2d(_Local):
    """A locally connected layer (the paper's W1): a convolution without weight sharing.

    Every output position (i, j) has its own bank of `out_channels` filters, each seeing a
    `kernel_size` x `kernel_size` window of all `in_channels` input maps; no padding. `weight` has
    shape (positions, out_channels, k * k * in_channels): positions row-major, fan-in ordered
    (window row, window column, channel). `bias=True` adds an untied bias per output unit,
    (out_channels, out_h, out_w), drawn as nn.Conv2d draws its bias; the default is no bias, as in
    the paper's W1^T x (and as every catneuron stage uses it). Input is (B, C, H, W) or unbatched
    (C, H, W), as for nn.Conv2d; a shape the layer was not built for is a RuntimeError, as there.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int | tuple[int, int], kernel_size: int,
                 stride: int = 1, bias: bool = False, tile_bytes: int = TILE_BYTES) -> None:
        super().__init__(in_channels, out_channels, input_size, kernel_size, stride, tile_bytes)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, *self.out_shape))
            self._reset_bias()
        else:
            self.register_parameter("bias", None)

    def init_std(self) -> float:
        return 1.0 / math.sqrt(self.fan_in)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._reset_bias()

    def _reset_bias(self) -> None:
        if getattr(self, "bias", None) is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_channels, out_h, out_w); (C, H, W) -> (out_channels, out_h, out_w)."""
        batched = check_input(self, x, self.in_channels, self.input_shape, "input")
        x = x if batched else x.unsqueeze(0)
        batch = x.shape[0]
        codes = _Encode.apply(to_batch_last(x), self.weight, self.geometry(batch, x.dtype), self.operands(x.dtype),
                              self.grad_memory)
        out = codes.permute(2, 1, 0).reshape(batch, self.out_channels, *self.out_shape)
        if self.bias is not None:
            out = out + self.bias
        return out if batched else out.squeeze(0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bias={self.bias is not None}"


class LocalDecoder(_Local):
    """The untied decoder (the paper's W2): codes back to input space, overlapping windows summed.

    `weight` has the encoder's shape, (positions, out_channels, k * k * in_channels): row (l, o) is
    the image patch that code o at position l paints. With the encoder's weight it is exactly the
    adjoint (transpose) of that `LocallyConnected2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int | tuple[int, int], kernel_size: int,
                 stride: int = 1, tile_bytes: int = TILE_BYTES) -> None:
        super().__init__(in_channels, out_channels, input_size, kernel_size, stride, tile_bytes)

    def init_std(self) -> float:
        # Each input pixel is the sum over ~ceil(k/s)^2 windows of out_channels codes of about unit
        # size: this scale starts the reconstruction at the input's own magnitude, not far above it.
        overlap = math.ceil(self.kernel_size / self.stride) ** 2
        return 1.0 / math.sqrt(self.out_channels * overlap)

    def forward(self, codes: Tensor) -> Tensor:
        """(B, out_channels, out_h, out_w) -> (B, in_channels, height, width); unbatched as well."""
        batched = check_input(self, codes, self.out_channels, self.out_shape, "codes")
        codes = codes if batched else codes.unsqueeze(0)
        batch = codes.shape[0]
        flat = codes.reshape(batch, self.out_channels, -1).permute(2, 1, 0).contiguous()
        image = from_batch_last(_Decode.apply(flat, self.weight, self.geometry(batch, codes.dtype),
                                              self.operands(codes.dtype), self.grad_memory))
        return image if batched else image.squeeze(0)
