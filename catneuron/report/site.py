"""`write_report`: the run's static HTML site, readable from disk with no server and no network."""

from __future__ import annotations

from pathlib import Path

from catneuron.report.collect import EMERGENCE, TRAINING_CURVES, collect
from catneuron.report.index import index_page
from catneuron.report.neuron import neuron_page
from catneuron.report.parts import Assets
from catneuron.report.plots import emergence_curves, training_curves
from catneuron.store import files


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run` into `out` (default RUN/report) and return the path of its index.html.

    Figures and data files are copied in, so every link resolves inside the report folder.
    """
    view = collect(run)
    out = Path(out) if out is not None else view.run / "report"
    out.mkdir(parents=True, exist_ok=True)
    assets = Assets(out)
    curves = TRAINING_CURVES if training_curves(view.metrics, out / TRAINING_CURVES) else None
    emergence = EMERGENCE if emergence_curves(view.watch, out / EMERGENCE) else None
    for neuron in view.neurons:
        files.write_atomic(out / neuron.page, neuron_page(neuron, view, assets).encode("utf-8"))
    index = out / "index.html"
    files.write_atomic(index, index_page(view, assets, curves, emergence).encode("utf-8"))
    return index
