"""Local contrast normalization (Jarrett et al. 2009), the third sublayer of a stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gaussian_window(size: int, channels: int) -> Tensor:
    """A (1, channels, size, size) Gaussian with sigma = size / 4, summing to 1 over maps and space."""
    sigma = size / 4.0
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma * sigma))
    g = g.expand(channels, size, size)
    return (g / g.sum()).unsqueeze(0).to(torch.get_default_dtype())


class LocalContrastNorm(nn.Module):
    """Subtractive then divisive normalization over a Gaussian window spanning all maps.

    v = x - sum_{c,p,q} w_pq x_c(i+p, j+q);  sigma = sqrt(sum_{c,p,q} w_pq v_c(i+p, j+q)^2);
    y = v / max(mean(sigma), sigma), the floor being sigma's mean over the image (Jarrett et al.),
    itself floored at `min_floor` so a constant image gives zeros instead of a division by zero.
    Windows are zero-padded and renormalized by the weight they cover, so borders use the pixels
    that exist rather than a halo of zeros. `size` is odd; the output keeps the input's shape.
    """

    def __init__(self, channels: int, size: int = 5, min_floor: float = 1e-4) -> None:
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"LCN window size must be odd, got {size}")
        self.channels, self.size, self.min_floor = channels, size, min_floor
        self.register_buffer("window", gaussian_window(size, channels), persistent=False)

    def _local_mean(self, x: Tensor) -> Tensor:
        pad = self.size // 2
        ones = torch.ones_like(x[:1])
        coverage = F.conv2d(ones, self.window, padding=pad)
        return F.conv2d(x, self.window.to(x.dtype), padding=pad) / coverage.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        v = x - self._local_mean(x)
        sigma = torch.sqrt(self._local_mean(v * v))
        floor = sigma.mean(dim=(1, 2, 3), keepdim=True).clamp_min(self.min_floor)
        return v / torch.maximum(sigma, floor)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, sigma={self.size / 4:.3g}"

