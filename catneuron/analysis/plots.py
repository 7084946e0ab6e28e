"""Training curves and the watch's emergence curves as PNGs, drawn with matplotlib's Agg canvas (no display, no
global pyplot state)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from catneuron.analysis.emergence import concepts_of, curve, latest_baselines, set_size, watch_records, wilson
from catneuron.store import files
from catneuron.store.runs import number


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    found = [(number(r.get("step")), number(r.get(key))) for r in rows]
    points = [(s, v) for s, v in found if s is not None and v is not None]
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


BASELINE_LINES = (("random_guess", "random guess", ":"), ("random_weights", "random weights", "--"),
                  ("linear_filter", "best linear filter", "-."), ("bar", "bar (better baseline + 3 points)", "-"))


def band(collection, xs: Sequence[float]) -> list[tuple[float, ...]]:
    """(x, low, high) of a fill_between band at each x, read back from its polygon."""
    vertices = collection.get_paths()[0].vertices
    return [(float(x), float(min(ys)), float(max(ys))) for x in xs
            for ys in [[y for vx, y in vertices if vx == x]]]


def emergence_curves(rows: list[dict], path: Path) -> dict[str, dict[str, list[tuple[float, ...]]]]:
    """Held-out accuracy of each stage's best unit against images seen (log axis), one panel per watched concept,
    each point with its 95% Wilson interval on the watch set's size as a band, the baselines and the bar as
    horizontal lines. Returns what each panel drew, read back from its artists ({concept: {label: [(x, y)]}},
    and {"stage S 95% interval": [(x, low, high)]}); empty, and nothing written, for a run without watch
    records."""
    records = watch_records(rows)
    concepts = concepts_of(records)
    if not concepts:
        return {}
    latest = latest_baselines(rows)
    base = (latest or {}).get("concepts", {})
    fig = Figure(figsize=(7.5, 3.6 * len(concepts)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    drawn: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for ax, concept in zip(fig.subplots(len(concepts), 1, squeeze=False)[:, 0], concepts, strict=True):
        n = set_size(latest, concept)
        bands: dict[str, list[tuple[float, ...]]] = {}
        for stage, (xs, ys) in sorted(curve(records, concept).items()):
            (line,) = ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=f"stage {stage}")
            if n:
                low, high = zip(*(wilson(y, n) for y in ys), strict=True)
                filled = ax.fill_between(xs, [100 * v for v in low], [100 * v for v in high],
                                         color=line.get_color(), alpha=0.15, linewidth=0)
                bands[f"stage {stage} 95% interval"] = band(filled, xs)
        for key, label, style in BASELINE_LINES:
            if number(base.get(concept, {}).get(key)) is not None:
                ax.axhline(100 * base[concept][key], color="#57606a" if key != "bar" else "#cf222e",
                           linestyle=style, linewidth=1, label=label)
        positive = [r["images"] for r in records if r["images"] > 0]
        if positive:
            ax.set_xscale("symlog", linthresh=min(positive))  # the start (0 images) stays on the axis
            ax.set_xlim(left=0)  # no negative decades from the margins
        interval = f"; bands: 95% interval on {n:,} images" if n else ""
        ax.set_title(f"{concept}: best unit per stage, held-out accuracy while training{interval}", fontsize=10)
        ax.set_xlabel("images seen")
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        lines: dict[str, list[tuple[float, ...]]] = {
            str(line.get_label()): [(float(x), float(y))
                                    for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)]
            for line in ax.get_lines()}
        drawn[concept] = lines | bands
    png = io.BytesIO()
    fig.savefig(png, format="png")
    files.write_atomic(path, png.getvalue())
    return drawn
