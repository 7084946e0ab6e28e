"""Invariance curves (Le et al. 2012, section 4.5, Figures 4 and 5): a neuron's mean response over a few
images (10 in the paper) as they are scaled, shifted, rotated in the image plane, or seen from other
angles (out-of-plane rotation, from a folder of views ordered by angle).

Transforms are one bilinear resampling each (torch `grid_sample`), about the image centre; pixels that
come from outside the image take the image's own mean (per channel), so a transform adds no edge the
neuron could respond to.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from catneuron.analysis.features import as_float
from catneuron.analysis.stimuli import responses
from catneuron.data.images import list_images, read_images
from catneuron.errors import UserError
from catneuron.model.network import Network, NeuronId
from catneuron.store import files

TRANSFORMS = {"scale": "scale factor", "horizontal": "shift (pixels)", "vertical": "shift (pixels)",
              "rotation": "in-plane rotation (degrees)"}
TITLES = {"scale": "Scale", "horizontal": "Horizontal translation", "vertical": "Vertical translation",
          "rotation": "In-plane rotation", "out-of-plane": "Out-of-plane (3D) rotation"}


def transform(images: Tensor, kind: str, amount: float) -> Tensor:
    """Images (B, C, S, S) scaled by `amount` (> 1 enlarges), shifted right/down by `amount` pixels
    (`horizontal`/`vertical`), or rotated `amount` degrees counter-clockwise (`rotation`)."""
    size = images.shape[-1]
    if kind == "scale":
        if amount <= 0:
            raise ValueError(f"scale factor must be positive, got {amount}")
        theta = [[1 / amount, 0.0, 0.0], [0.0, 1 / amount, 0.0]]
    elif kind == "horizontal":
        theta = [[1.0, 0.0, -2 * amount / size], [0.0, 1.0, 0.0]]
    elif kind == "vertical":
        theta = [[1.0, 0.0, 0.0], [0.0, 1.0, -2 * amount / size]]
    elif kind == "rotation":
        c, s = math.cos(math.radians(amount)), math.sin(math.radians(amount))
        theta = [[c, -s, 0.0], [s, c, 0.0]]
    else:
        raise ValueError(f"unknown transform {kind!r} (known: {', '.join(TRANSFORMS)})")
    matrices = torch.tensor(theta, dtype=images.dtype, device=images.device).expand(len(images), 2, 3)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return sampled + (1 - inside) * images.mean(dim=(2, 3), keepdim=True)


def default_amounts(size: int) -> dict[str, np.ndarray]:
    """Scales 0.4 to 1.6, shifts up to a quarter of the image each way (whole pixels), rotations +-180 degrees."""
    shift = max(1, size // 4)
    shifts = np.unique(np.round(np.linspace(-shift, shift, 17)))
    return {"scale": np.round(np.linspace(0.4, 1.6, 13), 3), "horizontal": shifts, "vertical": shifts,
            "rotation": np.arange(-180.0, 181.0, 15.0)}


@dataclass
class Curve:
    """The response of a neuron against one transform: mean and standard deviation over `n` images."""

    transform: str
    unit: str
    amounts: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int


def _curve(kind: str, unit: str, amounts: np.ndarray, table: Tensor) -> Curve:
    """`table`: responses (len(amounts), n images)."""
    table = table.double()
    std = table.std(dim=1) if table.shape[1] > 1 else torch.zeros(len(table), dtype=table.dtype)
    return Curve(kind, unit, np.asarray(amounts, dtype=float), table.mean(dim=1).numpy(), std.numpy(),
                 table.shape[1])


def invariance_curves(network: Network, images: Tensor | np.ndarray, neuron: NeuronId,
                      amounts: dict[str, np.ndarray] | None = None) -> list[Curve]:
    """One Curve per transform in `amounts` (default: `default_amounts` of the network's input size)."""
    batch = as_float(images)
    amounts = default_amounts(batch.shape[-1]) if amounts is None else amounts
    curves = []
    for kind, values in amounts.items():
        # All amounts in one set: a few large batches, not one small batch per amount (6x less CPU on `small`).
        views = torch.cat([transform(batch, kind, float(a)) for a in values])
        table = responses(network, views, neuron).view(len(values), len(batch))
        curves.append(_curve(kind, TRANSFORMS[kind], values, table))
    return curves


def out_of_plane_curve(network: Network, sequences: Sequence[Tensor | np.ndarray], angles: np.ndarray, unit: str,
                       neuron: NeuronId) -> Curve:
    """Mean response at each view over several sequences of the same length (one object each, by angle)."""
    table = torch.stack([responses(network, seq, neuron) for seq in sequences], dim=1)
    return _curve("out-of-plane", unit, angles, table)


_TRAILING_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)$")


def read_views(folder: str | Path, size: int, channels: int,
               flag: str = "--out-of-plane") -> tuple[list[np.ndarray], np.ndarray, str]:
    """Views of objects rotating in depth: the images of `folder` (or of each sub-folder: one object each).

    Returns the sequences (uint8 (views, C, S, S), all of one length), the x-axis values and their unit:
    angles in degrees when every file name ends in a number (`face_-30.png`), ordered by it, else the
    position in sorted file-name order.
    """
    paths = list_images(folder, flag)
    if not paths:
        raise UserError(f"{flag} {folder}: no images found")
    groups: dict[Path, list[Path]] = {}
    for path in paths:
        groups.setdefault(path.parent, []).append(path)
    numbered = all(_TRAILING_NUMBER.search(p.stem) for p in paths)
    key = (lambda p: float(_TRAILING_NUMBER.search(p.stem).group(1))) if numbered else (lambda p: p.name)  # type: ignore[union-attr]
    sequences = [sorted(group, key=key) for group in groups.values()]
    lengths = {len(s) for s in sequences}
    if len(lengths) > 1:
        raise UserError(f"{flag} {folder}: the sub-folders hold different numbers of views ({sorted(lengths)}); "
                        f"each must hold one object's views at the same angles")
    if numbered:
        angles = np.array([key(p) for p in sequences[0]])
        if any(not np.allclose([key(p) for p in s], angles) for s in sequences[1:]):
            raise UserError(f"{flag} {folder}: the sub-folders' file names give different angles")
    else:
        angles = np.arange(len(sequences[0]), dtype=float)
    decoded = []
    for seq in sequences:
        found = read_images(seq, size, channels)
        if found.skipped:
            path, reason = found.skipped[0]
            raise UserError(f"{flag} {path}: cannot decode ({reason})")
        decoded.append(found.images)
    return decoded, angles, "angle (degrees)" if numbered else "view (sorted file names)"


def write_csv(curves: list[Curve], path: str | Path) -> None:
    """transform, amount, unit, mean, std, n: one row per point of every curve."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["transform", "amount", "unit", "mean", "std", "n"])
    for c in curves:
        for a, m, s in zip(c.amounts, c.mean, c.std, strict=True):
            writer.writerow([c.transform, f"{a:g}", c.unit, f"{m:.6g}", f"{s:.6g}", c.n])
    files.write_atomic(path, out.getvalue())


def plot_curves(curves: list[Curve], path: str | Path, title: str) -> None:
    """One panel per transform, mean response with a +-1 standard deviation band, like Figures 4 and 5."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(curves), 3.0), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, c in zip(axes, curves, strict=True):
        ax.fill_between(c.amounts, c.mean - c.std, c.mean + c.std, color="tab:red", alpha=0.2, linewidth=0)
        ax.plot(c.amounts, c.mean, color="tab:red", marker="o", markersize=3)
        objects = f" ({c.n} object{'s' * (c.n != 1)})" if c.transform == "out-of-plane" else ""
        ax.set_title(TITLES[c.transform] + objects, fontsize=10)
        ax.set_xlabel(c.unit)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean response ({curves[0].n} images)")
    fig.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    files.write_atomic(path, buffer.getvalue())
