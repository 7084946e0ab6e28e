"""L2 pooling: each unit is sqrt(eps + sum of squares) over a k x k window of ONE map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class L2Pool2d(nn.Module):
    """The paper's second sublayer, with fixed uniform pooling weights H (all ones, not trained).

    Output j is sqrt(eps + H_j h^2): the same quantity the TICA sparsity term sums, so a stage
    computes it once for both. eps keeps the gradient finite where a window is all zeros.
    """

    def __init__(self, kernel_size: int, stride: int = 1, eps: float = 1e-2) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.eps = kernel_size, stride, eps

    def forward(self, h: Tensor) -> Tensor:
        window = self.kernel_size * self.kernel_size
        sums = F.avg_pool2d(h * h, self.kernel_size, self.stride) * window
        return torch.sqrt(self.eps + sums)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, eps={self.eps}"
