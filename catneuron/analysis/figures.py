"""The paper's pictures as PNG files: activation histograms, top stimuli, first-stage filters, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from catneuron.model.network import Network  # noqa: E402


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
    ax.hist(values[labels == 0], bins=bins, alpha=0.6, density=True, label="distractors")
    ax.hist(values[labels == 1], bins=bins, alpha=0.6, density=True, label=concept)
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


def first_stage_filters(network: Network, path: Path) -> Path:
    """Stage-1 encoder filters (W1) of every map at a few positions across the image."""
    stage = network.stages[0]
    enc = stage.encoder
    k, c = enc.kernel_size, enc.in_channels
    rows, cols = enc.out_shape
    spots = [(rows * f // 4, cols * f // 4) for f in (1, 2, 3)]
    weights = enc.weight.detach().cpu().numpy()
    tiles = [weights[y * cols + x, m].reshape(k, k, c).transpose(2, 0, 1) for y, x in spots
             for m in range(enc.out_channels)]
    return image_grid(np.stack(tiles), path, "stage-1 filters (rows: positions, columns: maps)",
                      columns=enc.out_channels)
