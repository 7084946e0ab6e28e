"""The nine-layer network: three stages, each filter -> L2 pool -> LCN, trained on the sum of their objectives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from catneuron.model.config import ModelConfig, StageShape, stage_shapes
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.stage import SUBLAYERS, Stage, StageOutput


def standardize(x: Tensor) -> Tensor:
    """Per-image zero mean and unit variance: the input normalization every consumer of the network shares.

    The paper's frames go straight into the first stage; removing each image's brightness and
    contrast keeps the reconstruction term's scale the same across images and corpora.
    """
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True).clamp_min(1e-3)
    return ((flat - mean) / std).reshape(x.shape)


@dataclass(frozen=True)
class NeuronId:
    """A unit of the network: stage (1-based), sublayer, map, row, column. Written `s3.pool.m2.y4.x5`."""

    stage: int
    sublayer: str
    map: int
    y: int
    x: int

    def __str__(self) -> str:
        return f"s{self.stage}.{self.sublayer}.m{self.map}.y{self.y}.x{self.x}"

    @classmethod
    def parse(cls, text: str) -> NeuronId:
        try:
            s, sub, m, y, x = text.split(".")
            if not (s[0] == "s" and m[0] == "m" and y[0] == "y" and x[0] == "x") or sub not in SUBLAYERS:
                raise ValueError
            return cls(int(s[1:]), sub, int(m[1:]), int(y[1:]), int(x[1:]))
        except (ValueError, IndexError):
            raise ValueError(f"not a neuron id: {text!r} (expected like s3.pool.m2.y4.x5)") from None


class StageNetwork(nn.Module):
    """What the single-process network and a model-parallel rank's share of it (catneuron.parallel) have in
    common: they read only `config` and `stages`."""

    config: ModelConfig
    stages: nn.ModuleList

    def set_precision(self, precision: str) -> None:
        """The locally connected products' operands: "float32", "bf16" (bfloat16, accumulated in float32) or "tf32"
        (float32 multiplied as TF32 on CUDA, float32 elsewhere). Weights, optimizer state, pooling, LCN and the
        objective stay float32 either way."""
        operands = {"float32": None, "bf16": torch.bfloat16, "tf32": None}[precision]
        for module in self.modules():
            if isinstance(module, (LocallyConnected2d, LocalDecoder)):
                module.operand_dtype, module.tf32 = operands, precision == "tf32"

    def loss(self, outputs: list[StageOutput]) -> Tensor:
        return torch.stack([o.loss for o in outputs]).sum()

    def normalize_weights(self) -> None:
        if self.config.weight_norm != "none":
            for stage in self.stages:
                cast(Stage, stage).normalize_weights(self.config.weight_norm)


class Network(StageNetwork):
    """Three (or more) stages. Input: images in [0, 1], (B, channels, size, size); standardized inside.

    With `detach_stages` (the default), stage k+1 sees stage k's output as a constant, so each
    objective trains its own stage only, as in greedy layer-wise sparse coding but all at once; with
    it off, upper objectives also send gradients into lower stages. docs/model.md has the measurement
    behind the default.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.shapes: list[StageShape] = stage_shapes(config)
        self.stages = nn.ModuleList(
            Stage(sh.in_channels, sh.in_size, cfg, config.sparsity, config.eps, config.lcn, config.encoder)
            for sh, cfg in zip(self.shapes, config.stages, strict=True)
        )

    def forward(self, images: Tensor, objective: bool = True, detach: bool | None = None) -> list[StageOutput]:
        """`detach` overrides `config.detach_stages`: supervised fine-tuning needs gradients through every stage."""
        detach = self.config.detach_stages if detach is None else detach
        x = standardize(images)
        outputs = []
        for stage in self.stages:
            out = stage(x, objective)
            outputs.append(out)
            x = out.norm.detach() if detach else out.norm
        return outputs

    def sublayer_shapes(self) -> dict[tuple[int, str], tuple[int, int]]:
        """(stage, sublayer) -> (maps, side) for every sublayer, in network order."""
        out = {}
        for sh in self.shapes:
            out[(sh.index, "filter")] = (sh.maps, sh.filter_size)
            out[(sh.index, "pool")] = (sh.maps, sh.pool_size)
            out[(sh.index, "norm")] = (sh.maps, sh.pool_size)
        return out

    def activations(self, images: Tensor) -> dict[tuple[int, str], Tensor]:
        """Every unit's activation, (B, maps, side, side) per (stage, sublayer), without the objective."""
        outputs = self.forward(images, objective=False)
        return {(i, name): getattr(o, name) for i, o in enumerate(outputs, start=1) for name in SUBLAYERS}

    def neuron(self, images: Tensor, neuron: NeuronId) -> Tensor:
        """One unit's activation per image, (B,), differentiable with respect to the images."""
        x = standardize(images)
        for index, stage in enumerate(self.stages, start=1):
            out = stage(x, objective=False)
            if index == neuron.stage:
                return getattr(out, neuron.sublayer)[:, neuron.map, neuron.y, neuron.x]
            x = out.norm
        raise ValueError(f"neuron {neuron}: the network has {len(self.stages)} stages")
