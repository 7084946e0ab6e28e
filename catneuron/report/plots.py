"""Training curves as a PNG, drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from catneuron.report.html import number
from catneuron.store import files


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(number(r.get("step")), number(r.get(key))) for r in rows]
    points = [(s, v) for s, v in points if s is not None and v is not None]
    return [s for s, _ in points], [v for _, v in points]


def training_curves(rows: list[dict], path: Path) -> bool:
    """Loss, per-stage reconstruction and sparsity terms, and throughput against step; False when nothing to draw."""
    steps, loss = _series(rows, "loss")
    if not steps:
        return False
    stages = sorted({int(m.group(1)) for r in rows for k in r if (m := re.fullmatch(r"recon_(\d+)", k))})
    fig = Figure(figsize=(10, 5.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(2, 2, sharex=True)
    panels[0, 0].plot(steps, loss, color="#24292f")
    panels[0, 0].set_title("objective (sum over stages)")
    for s in stages:
        panels[0, 1].plot(*_series(rows, f"recon_{s}"), label=f"stage {s}")
        panels[1, 0].plot(*_series(rows, f"sparsity_{s}"), label=f"stage {s}")
    panels[0, 1].set_title("reconstruction term")
    panels[1, 0].set_title("sparsity term")
    panels[1, 1].plot(*_series(rows, "images_per_s"), color="#1f6feb")
    panels[1, 1].set_title("throughput (images/s)")
    for ax in panels.flat:
        ax.grid(alpha=0.3)
    if stages:
        panels[0, 1].legend(fontsize=8)
        panels[1, 0].legend(fontsize=8)
    for ax in panels[1]:
        ax.set_xlabel("step")
    positive = [v for v in loss if v > 0]
    if positive and len(positive) == len(loss) and max(loss) / min(loss) > 20:
        panels[0, 0].set_yscale("log")
    png = io.BytesIO()
    fig.savefig(png, format="png")
    files.write_atomic(path, png.getvalue())
    return True
