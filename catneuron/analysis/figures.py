"""The paper's pictures as PNG files: activation histograms, top stimuli, every stage's filters (W1 and W2)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from catneuron.model.network import Network  # noqa: E402
from catneuron.model.stage import Stage  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def histogram(values: np.ndarray, labels: np.ndarray, threshold: float, title: str, concept: str,
              path: Path) -> Path:
    """The paper's Figure 2: a neuron's activations on the concept vs. distractors, threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(values.min(), values.max(), 40)
    ax.hist(values[labels == 0], bins=bins.tolist(), alpha=0.6, density=True, label="distractors")
    ax.hist(values[labels == 1], bins=bins.tolist(), alpha=0.6, density=True, label=concept)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label="best threshold")
    ax.set_xlabel("activation")
    ax.set_ylabel("frequency (normalized)")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def image_grid(images: np.ndarray, path: Path, title: str = "", columns: int = 8,
               captions: list[str] | None = None, marked: np.ndarray | None = None) -> Path:
    """Images (N, C, S, S) in any range, each rescaled to its own min..max, in a grid; those `marked` (bool per
    image, e.g. the concept's images among top stimuli) in a green frame."""
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.2 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].astype(np.float64)
        img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", interpolation="nearest")
        if marked is not None and marked[i]:
            side = img.shape[-1]
            ax.add_patch(Rectangle((-0.5, -0.5), side, side, fill=False, edgecolor="#1a7f37", linewidth=3))
        if captions:
            ax.set_title(captions[i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _signed(w: np.ndarray) -> np.ndarray:
    """Weights into [0, 1] with zero at mid-grey, scaled by their largest magnitude."""
    return 0.5 + w / (2 * max(float(np.abs(w).max()), 1e-12))


def _mosaic(tiles: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of equal (k, k) or (k, k, 3) tiles in [0, 1] as one image, one white pixel between tiles."""
    k = tiles[0][0].shape[0]
    rows, cols = len(tiles), len(tiles[0])
    canvas = np.ones((rows * (k + 1) - 1, cols * (k + 1) - 1, *tiles[0][0].shape[2:]))
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            canvas[r * (k + 1):r * (k + 1) + k, c * (k + 1):c * (k + 1) + k] = tile
    return canvas


def _filter_tiles(weight: np.ndarray, out_shape: tuple[int, int], k: int, channels: int) -> tuple[list, str]:
    """One row per map. Over the image (stage 1): a filter at three positions along the diagonal, each
    scaled on its own. Over maps (higher stages): one tile per input map at the centre position, the row
    scaled together so the input maps compare."""
    rows, cols = out_shape
    filters = weight.reshape(weight.shape[0], weight.shape[1], k, k, channels)  # fan-in (row, column, channel)
    if channels in (1, 3):
        spots = [(rows * f // 4, cols * f // 4) for f in (1, 2, 3)]
        tiles = [[_signed(filters[y * cols + x, m]).squeeze(-1) for y, x in spots] for m in range(weight.shape[1])]
        return tiles, "columns: positions"
    centre = filters[(rows // 2) * cols + cols // 2]
    tiles = []
    for m in range(weight.shape[1]):
        row = _signed(centre[m])
        tiles.append([row[..., c] for c in range(channels)])
    return tiles, "columns: input maps, centre position"


def filters(network: Network, path: Path) -> Path:
    """Every stage's encoder W1 beside its decoder W2 (the decoder shows the structure a unit paints back into
    its input), one row per map; zero is mid-grey."""
    stages = [cast(Stage, stage) for stage in network.stages]
    fig, axes = plt.subplots(len(stages), 2, figsize=(9, 4.2 * len(stages)), squeeze=False)
    for s, stage in enumerate(stages, start=1):
        for ax, layer, name in ((axes[s - 1, 0], stage.encoder, "W1 (encoder)"),
                                (axes[s - 1, 1], stage.decoder, "W2 (decoder)")):
            weight = layer.weight.detach().float().cpu().numpy()
            tiles, columns = _filter_tiles(weight, layer.out_shape, layer.kernel_size, layer.in_channels)
            image = _mosaic(tiles)
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"stage {s} {name}\nrows: maps, {columns}", fontsize=9)
            ax.axis("off")
    return _save(fig, path)
