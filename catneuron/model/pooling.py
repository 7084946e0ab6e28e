"""L2 pooling: each unit is sqrt(eps + sum of squares) over a k x k window of ONE map."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _shifted_sums(x: Tensor, k: int) -> Tensor:
    """Sums of x over every k x k window (stride 1, no padding), by 2(k-1) shifted in-place adds."""
    h, w = x.shape[-2:]
    rows = x[..., :h - k + 1, :].clone()
    for d in range(1, k):
        rows += x[..., d:h - k + 1 + d, :]
    out = rows[..., :w - k + 1].clone()
    for d in range(1, k):
        out += rows[..., d:w - k + 1 + d]
    return out


def _spread_sums(g: Tensor, k: int) -> Tensor:
    """The adjoint of `_shifted_sums`: each window's value added to its k x k pixels, by 2k shifted in-place adds."""
    h, w = g.shape[-2:]
    cols = g.new_zeros(*g.shape[:-1], w + k - 1)
    for d in range(k):
        cols[..., d:d + w] += g
    out = g.new_zeros(*g.shape[:-2], h + k - 1, w + k - 1)
    for d in range(k):
        out[..., d:d + h, :] += cols
    return out


def box_sum(x: Tensor, kernel_size: int, stride: int = 1) -> Tensor:
    """(..., H, W) -> sums over each kernel_size x kernel_size window, every `stride` pixels (not differentiated:
    `L2Pool2d` carries its own gradient)."""
    sums = _shifted_sums(x, kernel_size)
    return sums if stride == 1 else sums[..., ::stride, ::stride]


class _L2Pool(torch.autograd.Function):
    """sqrt(eps + window sums of h^2) and its gradient in three passes, h * spread(grad / out), instead of
    autograd's seven (square, sums, sqrt, each with its own backward and temporaries)."""

    @staticmethod
    def forward(ctx, h: Tensor, k: int, stride: int, eps: float) -> Tensor:
        out = box_sum(h * h, k, stride).add_(eps).sqrt_()
        ctx.k, ctx.stride = k, stride
        ctx.save_for_backward(h, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, out = ctx.saved_tensors
        k, stride = ctx.k, ctx.stride
        g = grad / out
        if stride > 1:  # back onto the stride-1 grid of window sums, zeros between the kept windows
            full = g.new_zeros(*h.shape[:-2], h.shape[-2] - k + 1, h.shape[-1] - k + 1)
            full[..., ::stride, ::stride] = g
            g = full
        return _spread_sums(g, k).mul_(h), None, None, None


class L2Pool2d(nn.Module):
    """The paper's second sublayer, with fixed uniform pooling weights H (all ones, not trained).

    Output j is sqrt(eps + H_j h^2): the same quantity the TICA sparsity term sums, so a stage
    computes it once for both. eps keeps the gradient finite where a window is all zeros.
    """

    def __init__(self, kernel_size: int, stride: int = 1, eps: float = 1e-2) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.eps = kernel_size, stride, eps

    def forward(self, h: Tensor) -> Tensor:
        return _L2Pool.apply(h, self.kernel_size, self.stride, self.eps)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, eps={self.eps}"
