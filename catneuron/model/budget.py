"""Parameters and FLOPs per layer, computed from the config alone (nothing is allocated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from catneuron.errors import UserError
from catneuron.model.config import ModelConfig, stage_shapes


@dataclass(frozen=True)
class LayerRow:
    stage: int
    sublayer: str
    shape: str
    parameters: int
    flops: int


def layer_rows(model: ModelConfig) -> list[LayerRow]:
    """Forward FLOPs per image, multiply-add = 2: encoder and decoder each 2*L*maps*fan_in;
    pooling 2*k^2 per unit (square, add) + sqrt; LCN two Gaussian windows over all maps per unit."""
    rows = []
    for sh, cfg in zip(stage_shapes(model), model.stages, strict=True):
        linear = 2 * sh.positions * sh.maps * sh.fan_in
        half = sh.parameters // 2
        fshape = f"{sh.maps}x{sh.filter_size}x{sh.filter_size}"
        pshape = f"{sh.maps}x{sh.pool_size}x{sh.pool_size}"
        pooled_units = sh.maps * sh.pool_size**2
        rows.append(LayerRow(sh.index, "filter (W1)", fshape, half, linear))
        rows.append(LayerRow(sh.index, "pool (L2)", pshape, 0, pooled_units * (2 * cfg.pool**2 + 1)))
        if model.lcn:
            rows.append(LayerRow(sh.index, "norm (LCN)", pshape, 0, pooled_units * (4 * sh.maps * cfg.lcn_size**2 + 4)))
        rows.append(LayerRow(sh.index, "decoder (W2)", f"{sh.in_channels}x{sh.in_size}x{sh.in_size}", half, linear))
    return rows


def training_flops(model: ModelConfig) -> int:
    """FLOPs per image of one training step. Each sublayer's backward costs twice its forward (the
    gradients to its input and to its weights), except that the encoder's input needs no gradient
    when stages are detached (stage 1's input is the image; the others' are constants)."""
    def factor(row: LayerRow) -> int:
        return 2 if row.sublayer == "filter (W1)" and model.detach_stages else 3
    return sum(r.flops * factor(r) for r in layer_rows(model))


def weight_bytes(model: ModelConfig) -> int:
    """The network's weights in float32."""
    return 4 * sum(s.parameters for s in stage_shapes(model))


def training_bytes(model: ModelConfig) -> int:
    """A lower bound of training's memory: weights, their gradients and the optimizer's sums (activations more)."""
    return 3 * weight_bytes(model)


def available_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), or None where /proc/meminfo says nothing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(need: int, what: str) -> None:
    """Refuse before allocating what cannot fit in the memory available now (a MemoryError or the kernel's
    OOM killer would say it later, after minutes, or not at all)."""
    available = available_bytes()
    if available is not None and need > available:
        raise UserError(f"{what} needs at least {need / 2**30:,.1f} GiB of memory; "
                        f"{available / 2**30:,.1f} GiB is available")
