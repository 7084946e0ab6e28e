"""Parameters, FLOPs and memory per layer, computed from the config alone (nothing is allocated)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

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


def activation_bytes(model: ModelConfig, batch: int) -> int:
    """A lower bound of one training step's activations in float32: per image, each stage's input, codes, pooled and
    normalized maps and reconstruction kept for the backward pass, and as much again for their gradients."""
    units = sum(2 * sh.in_channels * sh.in_size**2 + sh.maps * (sh.filter_size**2 + 2 * sh.pool_size**2)
                for sh in stage_shapes(model))
    return 2 * 4 * units * batch


def training_bytes(model: ModelConfig, batch: int = 0) -> int:
    """A lower bound of training's memory: weights, their gradients and the optimizer's sums, and a step's batch and
    activations for `batch` images."""
    return 3 * weight_bytes(model) + activation_bytes(model, batch)


def available_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), or None where /proc/meminfo says nothing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_bytes(device: torch.device) -> int | None:
    """Memory free on a CUDA device now, or None where torch cannot say (no CUDA runtime: fake tensors)."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info(device)[0]


def check_fits(need: int, what: str, device: torch.device | str = "cpu") -> None:
    """Refuse before allocating what cannot fit in the memory available now on `device` (a MemoryError, CUDA's
    out-of-memory error or the kernel's OOM killer would say it later, after minutes, or not at all)."""
    device = torch.device(device)
    available = device_bytes(device) if device.type == "cuda" else available_bytes()
    where = f"{device.type.upper()} memory" if device.type == "cuda" else "memory"
    if available is not None and need > available:
        raise UserError(f"{what} needs at least {need / 2**30:,.1f} GiB of {where}; "
                        f"{available / 2**30:,.1f} GiB is available")
