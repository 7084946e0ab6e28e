"""`catneuron report`: the run's static HTML report (opens from disk, no server, no network)."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.errors import UserError
from catneuron.report import write_report
from catneuron.store import runs


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder."),
    out: Path = typer.Option(None, help="Report folder (default RUN/report)."),
) -> None:
    """Write an HTML report of a run: config, training curves, Table 1 per concept, one page per neuron."""
    if not runs.checkpoint_path(run).is_file() and not (Path(run) / runs.METRICS).is_file():
        raise UserError(f"{run}: not a run folder (no checkpoint, no metrics)")
    checks.writable_folder(out or Path(run) / "report", "--out" if out else "RUN")
    index = write_report(run, out)
    print(f"report: {index}")
