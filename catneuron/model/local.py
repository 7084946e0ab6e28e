"""Locally connected layers: untied filters, one filter bank per output position.

PyTorch has no locally connected layer (pytorch#499). Patch extraction, not arithmetic,
is what makes the obvious `F.unfold` + `bmm` slow, so the kernels here work in a
batch-last layout, (channels, height, width, batch): a patch row is then a run of
`batch` contiguous floats and extraction is a plain strided copy. Positions are
processed in chunks of output rows so that the patches of a batch never exceed a
memory budget; when they fit, they are kept for the backward pass instead of being
extracted twice.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

DEFAULT_BUDGET_BYTES = 1 << 30


def output_size(input_size: int, kernel_size: int, stride: int) -> int:
    """Side of the square grid of window positions (no padding)."""
    return (input_size - kernel_size) // stride + 1


def extract_patches(xt: Tensor, kernel_size: int, stride: int, rows: slice) -> Tensor:
    """(C, H, W, B) -> (positions, C*k*k, B) for the output rows in `rows`, row-major positions."""
    c, _, _, b = xt.shape
    view = xt.unfold(1, kernel_size, stride).unfold(2, kernel_size, stride)  # C, oh, ow, B, k, k
    view = view[:, rows].permute(1, 2, 0, 4, 5, 3)  # rows, ow, C, k, k, B
    return view.reshape(-1, c * kernel_size * kernel_size, b)


@functools.lru_cache(maxsize=64)
def _pixel_index(channels: int, size: int, kernel_size: int, stride: int, rows: tuple[int, int],
                 device: torch.device) -> Tensor:
    """For each patch entry (row, column, channel, dy, dx) of the output rows `rows`, its pixel's flat index."""
    ow = output_size(size, kernel_size, stride)
    ys = torch.arange(*rows, device=device) * stride
    xs = torch.arange(ow, device=device) * stride
    d = torch.arange(kernel_size, device=device)
    c = torch.arange(channels, device=device)
    index = (c.view(1, 1, -1, 1, 1) * size * size
             + (ys.view(-1, 1, 1, 1, 1) + d.view(1, 1, 1, -1, 1)) * size
             + xs.view(1, -1, 1, 1, 1) + d.view(1, 1, 1, 1, -1))
    return index.reshape(-1)


def fold_patches(out: Tensor, patches: Tensor, kernel_size: int, stride: int, rows: slice) -> None:
    """Add (positions, C*k*k, B) patches of the output rows `rows` into `out` (C, H, W, B), in place.

    Overlapping windows are summed: this is the adjoint of `extract_patches`. One `index_add_` of
    batch-long rows: k*k strided adds instead cost 100x more on a loaded machine, where each small
    multi-threaded op waits for a busy core.
    """
    c, size, _, b = out.shape
    index = _pixel_index(c, size, kernel_size, stride, (rows.start, rows.stop), out.device)
    out.view(-1, b).index_add_(0, index, patches.reshape(-1, b))


def _row_chunks(out_size: int, row_bytes: int, budget: int) -> list[slice]:
    per_chunk = max(1, min(out_size, budget // max(1, row_bytes)))
    return [slice(r, min(out_size, r + per_chunk)) for r in range(0, out_size, per_chunk)]


class _Encode(torch.autograd.Function):
    """codes[l] = W[l] @ patches[l]: (C, H, W, B), (L, O, P) -> (L, O, B)."""

    @staticmethod
    def forward(ctx, xt: Tensor, weight: Tensor, kernel_size: int, stride: int, budget: int) -> Tensor:
        out_size = output_size(xt.shape[1], kernel_size, stride)
        chunks = _row_chunks(out_size, out_size * weight.shape[2] * xt.shape[3] * xt.element_size(), budget)
        ctx.geometry = (kernel_size, stride, out_size, chunks)
        if len(chunks) == 1:
            patches = extract_patches(xt, kernel_size, stride, chunks[0])
            ctx.save_for_backward(xt, weight, patches)
            return torch.bmm(weight, patches)
        codes = xt.new_empty(weight.shape[0], weight.shape[1], xt.shape[3])
        for rows in chunks:
            pos = slice(rows.start * out_size, rows.stop * out_size)
            torch.bmm(weight[pos], extract_patches(xt, kernel_size, stride, rows), out=codes[pos])
        ctx.save_for_backward(xt, weight)
        return codes

    @staticmethod
    def backward(ctx, grad_codes: Tensor):
        kernel_size, stride, out_size, chunks = ctx.geometry
        xt, weight, *kept = ctx.saved_tensors
        grad_codes = grad_codes.contiguous()
        grad_x = torch.zeros_like(xt) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        for rows in chunks:
            pos = slice(rows.start * out_size, rows.stop * out_size)
            g = grad_codes[pos]
            if grad_w is not None:
                patches = kept[0] if kept else extract_patches(xt, kernel_size, stride, rows)
                torch.bmm(g, patches.transpose(1, 2), out=grad_w[pos])
            if grad_x is not None:
                fold_patches(grad_x, torch.bmm(weight[pos].transpose(1, 2), g), kernel_size, stride, rows)
        return grad_x, grad_w, None, None, None


class _Decode(torch.autograd.Function):
    """The transpose map: (L, O, B) codes and (L, P, O) weights -> (C, H, W, B), windows summed."""

    @staticmethod
    def forward(ctx, codes: Tensor, weight: Tensor, shape: tuple[int, int, int], kernel_size: int,
                stride: int, budget: int) -> Tensor:
        channels, size, _ = shape
        out_size = output_size(size, kernel_size, stride)
        chunks = _row_chunks(out_size, out_size * weight.shape[1] * codes.shape[2] * codes.element_size(), budget)
        ctx.geometry = (kernel_size, stride, out_size, chunks)
        ctx.save_for_backward(codes, weight)
        out = codes.new_zeros(channels, size, size, codes.shape[2])
        for rows in chunks:
            pos = slice(rows.start * out_size, rows.stop * out_size)
            fold_patches(out, torch.bmm(weight[pos], codes[pos]), kernel_size, stride, rows)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        kernel_size, stride, out_size, chunks = ctx.geometry
        codes, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_codes = torch.empty_like(codes) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        for rows in chunks:
            pos = slice(rows.start * out_size, rows.stop * out_size)
            patches = extract_patches(grad_out, kernel_size, stride, rows)
            if grad_codes is not None:
                torch.bmm(weight[pos].transpose(1, 2), patches, out=grad_codes[pos])
            if grad_w is not None:
                torch.bmm(patches, codes[pos].transpose(1, 2), out=grad_w[pos])
        return grad_codes, grad_w, None, None, None, None


def to_batch_last(x: Tensor) -> Tensor:
    """(B, C, H, W) -> contiguous (C, H, W, B)."""
    return x.permute(1, 2, 3, 0).contiguous()


def from_batch_last(xt: Tensor) -> Tensor:
    """(C, H, W, B) -> contiguous (B, C, H, W)."""
    return xt.permute(3, 0, 1, 2).contiguous()


def codes_to_maps(codes: Tensor, out_size: int) -> Tensor:
    """(L, O, B) -> (B, O, oh, ow)."""
    return codes.permute(2, 1, 0).reshape(codes.shape[2], codes.shape[1], out_size, out_size)


def maps_to_codes(maps: Tensor) -> Tensor:
    """(B, O, oh, ow) -> contiguous (L, O, B)."""
    b, o = maps.shape[:2]
    return maps.reshape(b, o, -1).permute(2, 1, 0).contiguous()


class LocallyConnected2d(nn.Module):
    """A locally connected layer (the paper's W1): a convolution without weight sharing.

    Every output position (i, j) has its own filter bank of `out_channels` filters, each seeing a
    `kernel_size` x `kernel_size` window of all `in_channels` input maps; no padding, square inputs.
    `weight` has shape (positions, out_channels, in_channels * k * k), positions row-major.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int, kernel_size: int,
                 stride: int = 1, memory_budget: int = DEFAULT_BUDGET_BYTES) -> None:
        super().__init__()
        if kernel_size > input_size:
            raise ValueError(f"kernel_size {kernel_size} is larger than input_size {input_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size, self.kernel_size, self.stride = input_size, kernel_size, stride
        self.out_size = output_size(input_size, kernel_size, stride)
        self.memory_budget = memory_budget
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(self.out_size**2, out_channels, fan_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.weight.shape[2]))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_channels, out_size, out_size)."""
        codes = _Encode.apply(to_batch_last(x), self.weight, self.kernel_size, self.stride, self.memory_budget)
        return codes_to_maps(codes, self.out_size)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}")


class LocalDecoder(nn.Module):
    """The untied decoder (the paper's W2): codes back to input space, overlapping windows summed.

    With `weight` equal to the encoder's weight transposed per position, it is exactly the adjoint
    (transpose) of that `LocallyConnected2d`. `weight` has shape (positions, in_channels*k*k, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int, kernel_size: int,
                 stride: int = 1, memory_budget: int = DEFAULT_BUDGET_BYTES) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size, self.kernel_size, self.stride = input_size, kernel_size, stride
        self.out_size = output_size(input_size, kernel_size, stride)
        self.memory_budget = memory_budget
        self.weight = nn.Parameter(torch.empty(self.out_size**2, in_channels * kernel_size**2, out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each input pixel is the sum over ~ceil(k/s)^2 windows of out_channels codes of about unit
        # size: this scale starts the reconstruction at the input's own magnitude, not far above it.
        overlap = math.ceil(self.kernel_size / self.stride) ** 2
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.out_channels * overlap))

    def forward(self, codes: Tensor) -> Tensor:
        """(B, out_channels, out_size, out_size) -> (B, in_channels, input_size, input_size)."""
        shape = (self.in_channels, self.input_size, self.input_size)
        xt = _Decode.apply(maps_to_codes(codes), self.weight, shape, self.kernel_size, self.stride,
                           self.memory_budget)
        return from_batch_last(xt)
