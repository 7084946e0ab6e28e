"""`write_report`: the run's static HTML site, readable from disk with no server and no network."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from catneuron.analysis.plots import emergence_curves, training_curves
from catneuron.errors import UserError
from catneuron.report.collect import EMERGENCE, TRAINING_CURVES, collect
from catneuron.report.index import index_page
from catneuron.report.neuron import neuron_page
from catneuron.report.parts import Assets
from catneuron.store import files

MARK = b"<title>catneuron report"  # how a folder shows it holds a report this function wrote


def _replaceable(out: Path) -> None:
    """`out` may be replaced only if it is missing, empty, or a report written here before."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder")
    index = out / "index.html"
    if any(out.iterdir()) and not (index.is_file() and MARK in index.read_bytes()[:4096]):
        raise UserError(f"--out {out}: holds files that are not a catneuron report; choose a new or empty folder")


def write_report(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run` into `out` (default RUN/report) and return the path of its index.html.

    A fresh site every time: it is built in a folder beside `out` and swapped in whole, so no page of an
    earlier evaluation survives and a reader never sees half a report. Figures and data files are copied
    in, so every link resolves inside the report folder.
    """
    view = collect(run)
    out = Path(out) if out is not None else view.run / "report"
    _replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.new-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        assets = Assets(staging)
        curves = TRAINING_CURVES if training_curves(view.metrics, staging / TRAINING_CURVES) else None
        emergence = EMERGENCE if emergence_curves(view.watch, staging / EMERGENCE) else None
        for neuron in view.neurons:
            files.write_atomic(staging / neuron.page, neuron_page(neuron, view, assets).encode("utf-8"))
        files.write_atomic(staging / "index.html", index_page(view, assets, curves, emergence).encode("utf-8"))
        if out.exists():
            old = staging.with_name(staging.name.replace(".new-", ".old-"))
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out / "index.html"
