"""One stage of the network: local filtering, L2 pooling, local contrast normalization, and its objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from catneuron.model.config import StageConfig
from catneuron.model.lcn import LocalContrastNorm
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.pooling import L2Pool2d

SUBLAYERS = ("filter", "pool", "norm")


@dataclass
class StageOutput:
    """The three sublayers' activations and the stage's two objective terms (means over the batch)."""

    filter: Tensor
    pool: Tensor
    norm: Tensor
    reconstruction: Tensor
    sparsity: Tensor

    @property
    def loss(self) -> Tensor:
        return self.reconstruction + self.sparsity


class Neighbours(Protocol):
    """What a stage needs from the blocks around its own: the input regions its windows read, and the sum of
    the reconstruction painted over its block by every block's decoder."""

    def filter_region(self, x: Tensor) -> Tensor: ...

    def pool_region(self, h: Tensor) -> Tensor: ...

    def normalize(self, norm: nn.Module, pooled: Tensor) -> Tensor: ...

    def paint_sum(self, painted: Tensor) -> Tensor: ...


class _Alone:
    """A stage that holds the whole image: its windows read only what it has."""

    def filter_region(self, x: Tensor) -> Tensor:
        return x

    def pool_region(self, h: Tensor) -> Tensor:
        return h

    def normalize(self, norm: nn.Module, pooled: Tensor) -> Tensor:
        return norm(pooled)

    def paint_sum(self, painted: Tensor) -> Tensor:
        return painted


ALONE = _Alone()


class Stage(nn.Module):
    """Reconstruction TICA on untied locally connected filters (Le et al. 2012, eq. 1):

        ||W2 W1^T x - x||^2 + lambda * sum_j sqrt(eps + H_j (W1^T x)^2)

    summed over a stage's positions and averaged over the batch (the paper sums over examples; the
    mean keeps the learning rate independent of the batch size). `lcn=False` is the paper's no-LCN
    ablation: the stage outputs its pooled responses as they are. `encoder="sigmoid"` codes
    sigmoid(W1^T x) instead of W1^T x: the paper's locally connected deep-autoencoder baseline.
    """

    def __init__(self, in_channels: int, input_size: int | tuple[int, int], cfg: StageConfig, sparsity: float = 0.1,
                 eps: float = 1e-2, lcn: bool = True, encoder: str = "linear") -> None:
        super().__init__()
        args = (in_channels, cfg.maps, input_size, cfg.kernel, cfg.stride)
        self.encoder = LocallyConnected2d(*args)
        self.decoder = LocalDecoder(*args)
        self.pool = L2Pool2d(cfg.pool, cfg.pool_stride, eps)
        self.norm = LocalContrastNorm(cfg.maps, cfg.lcn_size) if lcn else nn.Identity()
        self.sparsity_weight = sparsity
        self.sigmoid = encoder == "sigmoid"

    def forward(self, x: Tensor, objective: bool = True, neighbours: Neighbours | None = None) -> StageOutput:
        """`neighbours`: for a stage that holds one block of the image (catneuron.parallel), the exchanges
        with the blocks around it; `x` and every output are then that block's."""
        neighbours = neighbours or ALONE
        h = self.encoder(neighbours.filter_region(x))
        if self.sigmoid:
            h = torch.sigmoid(h)
        pooled = self.pool(neighbours.pool_region(h))
        normed = neighbours.normalize(self.norm, pooled)
        if not objective:
            zero = h.new_zeros(())
            return StageOutput(h, pooled, normed, zero, zero)
        batch = x.shape[0]
        residual = neighbours.paint_sum(self.decoder(h)) - x
        reconstruction = (residual * residual).sum() / batch
        sparsity = self.sparsity_weight * pooled.sum() / batch
        return StageOutput(h, pooled, normed, reconstruction, sparsity)

    @torch.no_grad()
    def normalize_weights(self, which: str) -> None:
        """Project to unit norm the encoder's filters ("encoder") or also the decoder's patches ("both")."""
        for layer in (self.encoder, self.decoder) if which == "both" else (self.encoder,):
            w: Tensor = layer.weight
            w /= w.norm(dim=2, keepdim=True).clamp_min(1e-12)
