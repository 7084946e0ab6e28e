"""Local contrast normalization (Jarrett et al. 2009), the third sublayer of a stage."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def gaussian_taps(size: int) -> Tensor:
    """The window's separable factor: exp(-r^2 / (2 sigma^2)), sigma = size / 4, summing to 1 (float64)."""
    sigma = size / 4.0
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r**2) / (2 * sigma * sigma))
    return g / g.sum()


def banded(taps: Tensor, n: int) -> Tensor:
    """(n, n): row i is `taps` centred on column i, the taps past either end dropped (a zero-padded 1-D filter)."""
    r = len(taps) // 2
    offset = torch.arange(n, device=taps.device).view(1, -1) - torch.arange(n, device=taps.device).view(-1, 1) + r
    inside = (offset >= 0) & (offset < len(taps))
    return torch.where(inside, taps[offset.clamp(0, len(taps) - 1)], taps.new_zeros(()))


def gaussian_window(size: int, channels: int) -> Tensor:
    """A (1, channels, size, size) Gaussian with sigma = size / 4, summing to 1 over maps and space."""
    g = gaussian_taps(size)
    window = (torch.outer(g, g) / channels).expand(channels, size, size)
    return window.unsqueeze(0).to(torch.get_default_dtype())


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
        self.register_buffer("taps", gaussian_taps(size).to(torch.get_default_dtype()), persistent=False)
        self._band_cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    taps: Tensor  # a buffer

    def _bands(self, height: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """The blur's matrices for an H x W grid, (H, H) and (W, W): row i holds the taps centred on i, cut at
        the borders (zero padding). Made once per grid, type and device."""
        key = (height, width, like.dtype, like.device)
        if key not in self._band_cache:
            taps = self.taps.to(like.device, like.dtype)
            self._band_cache[key] = (banded(taps, height), banded(taps, width))
        return self._band_cache[key]

    def _blur(self, x: Tensor) -> Tensor:
        """Zero-padded Gaussian blur of (B, 1, H, W) maps, one axis at a time, as two small matrix products
        (five times faster than two one-channel convolutions at the presets' sizes)."""
        rows, cols = self._bands(x.shape[-2], x.shape[-1], x)
        return torch.matmul(rows, x @ cols.mT)

    def _local_mean(self, x: Tensor, coverage: Tensor) -> Tensor:
        """x averaged under `gaussian_window`, which is uniform over maps and separable in space,
        renormalized by `coverage`, the part of the window inside the image."""
        return self._blur(x.mean(dim=1, keepdim=True)) / coverage

    def forward(self, x: Tensor) -> Tensor:
        coverage = self.coverage(x)
        v = self.centre(x, coverage)
        sigma = self.deviation(v, coverage)
        return self.divide(v, sigma, sigma.mean(dim=(1, 2, 3), keepdim=True))

    # The steps of `forward`, public so that a block of an image (catneuron.parallel) can exchange
    # halos between them and average sigma over the whole image.
    def coverage(self, x: Tensor) -> Tensor:
        """(1, 1, H, W): the part of each window inside x's grid."""
        rows, cols = self._bands(x.shape[-2], x.shape[-1], x)
        return (rows.sum(dim=1, keepdim=True) * cols.sum(dim=1)).view(1, 1, *x.shape[-2:])

    def centre(self, x: Tensor, coverage: Tensor) -> Tensor:
        """v: x less its local mean."""
        return x - self._local_mean(x, coverage)

    def deviation(self, v: Tensor, coverage: Tensor) -> Tensor:
        """sigma, (B, 1, H, W): the local standard deviation of v."""
        return torch.sqrt(self._local_mean(v * v, coverage))

    def divide(self, v: Tensor, sigma: Tensor, sigma_mean: Tensor) -> Tensor:
        """v / max(sigma, floor), the floor being sigma's mean over the image (B, 1, 1, 1), floored at min_floor."""
        return v / torch.maximum(sigma, sigma_mean.clamp_min(self.min_floor))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, sigma={self.size / 4:.3g}"

