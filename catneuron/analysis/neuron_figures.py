"""A neuron's pictures in a run folder, where `catneuron report` finds them: the optimal stimulus beside
the top stimuli (the paper's Figure 3, results/optimal_<id>.json and figures/optimal_<id>.png) and the
invariance curves (Figure 4, results/invariance_<id>.csv and figures/invariance_<id>.png).

`visualize`, `invariance` and the demo all write them through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catneuron.analysis.features import as_float
from catneuron.analysis.invariance import Curve, invariance_curves, plot_curves, write_csv
from catneuron.analysis.optimal import PATIENCE, Convergence, optimal_stimulus, plot_optimal
from catneuron.analysis.stimuli import top_stimuli
from catneuron.model.network import Network, NeuronId
from catneuron.store import files, runs

TOLERANCE = 1e-4
"""Default relative gain of f over PATIENCE iterations below which a start has converged. Stage-3 units of
`small` reach 99% of their final value in about 20 iterations; 1e-6 kept them running 100 more."""


@dataclass
class Stimuli:
    """Images to take top stimuli from: (N, C, S, S), uint8 or floats in [0, 1]; one name per image (a
    path, or an index in a set); `source`, what the set is, for titles."""

    images: np.ndarray
    names: list[str]
    source: str


def stopping(c: Convergence, tolerance: float, steps: int, max_seconds: float | None) -> str:
    """Why a start stopped, in words: converged (at which tolerance) or not (which budget ran out)."""
    return {
        "gradient": "converged: the projected gradient fell below 1e-5 x max(1, |f|)",
        "stalled": f"converged: f gained less than {tolerance:g} x max(1, |f|) over the last {PATIENCE} iterations",
        "line search": "converged: no step along the gradient increased f (a maximum to numerical precision)",
        "steps": f"did not converge: the iteration budget ({steps}) ran out while f was still rising",
        "time": f"did not converge: the time budget ({max_seconds or 0:g} s) ran out while f was still rising",
    }[c.reason]


def optimal_figure(run: Path, network: Network, neuron: NeuronId, stimuli: Stimuli | None = None, top: int = 16,
                   starts: int = 8, steps: int = 300, seed: int = 0, tolerance: float = TOLERANCE,
                   max_seconds: float | None = None, progress: bool = True, extra: dict | None = None) -> dict:
    """x* of `neuron` beside its `top` stimuli among `stimuli`; writes the figure and the JSON record, returns
    the record (paths relative to `run`). The search stops at `tolerance`, `steps` iterations or `max_seconds`,
    and the record says which (`converged`, `stopped_on`, `stopping`)."""
    result = optimal_stimulus(network, neuron, starts=starts, steps=steps, seed=seed, ftol=tolerance,
                              max_seconds=max_seconds, progress=progress)
    best = result.starts[result.best]
    top_images = top_values = None
    top_records = []
    if stimuli is not None:
        index, top_values = top_stimuli(network, stimuli.images, neuron, top)
        top_images = as_float(stimuli.images[index]).numpy()
        top_records = [{"path": stimuli.names[i], "value": float(v)} for i, v in zip(index, top_values, strict=True)]
    figure = runs.figures_dir(run) / f"optimal_{neuron}.png"
    title = f"{neuron}: optimal stimulus" + (f" and top {len(top_records)} of {stimuli.source}"
                                             if stimuli is not None and top_records else "")
    plot_optimal(result.x[result.best], best.value, top_images, top_values, figure, title)
    record = {
        "neuron": str(neuron), "stage": neuron.stage, "sublayer": neuron.sublayer, "value": best.value,
        "converged": best.converged, "stopped_on": best.reason, "stopping": stopping(best, tolerance, steps,
                                                                                     max_seconds),
        "converged_starts": sum(c.converged for c in result.starts), "tolerance": tolerance,
        "patience": PATIENCE, "starts": starts, "steps": steps, "max_seconds": max_seconds, "seed": seed,
        "convergence": best.to_dict(), "all_starts": [c.to_dict() for c in result.starts],
        "images": None if stimuli is None else stimuli.source, "top_stimuli": top_records,
        "figure": str(figure.relative_to(run)),
    } | (extra or {})
    out = runs.results_dir(run) / f"optimal_{neuron}.json"
    files.write_json(out, record)
    return record | {"results": str(out.relative_to(run))}


def invariance_figure(run: Path, network: Network, neuron: NeuronId, images: np.ndarray, source: str,
                      extra_curves: list[Curve] | None = None) -> tuple[list[Curve], Path, Path]:
    """Scale, shift and rotation curves of `neuron`, averaged over `images` (and any `extra_curves`, e.g.
    out-of-plane rotation); writes the CSV and the figure, returns the curves and both paths."""
    curves = invariance_curves(network, images, neuron) + (extra_curves or [])
    csv_path = runs.results_dir(run) / f"invariance_{neuron}.csv"
    png_path = runs.figures_dir(run) / f"invariance_{neuron}.png"
    write_csv(curves, csv_path)
    plot_curves(curves, png_path, f"{neuron}: mean response over {len(images)} images of {source}")
    return curves, csv_path, png_path
