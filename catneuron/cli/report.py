"""`catneuron report`: the run's static HTML report (opens from disk, no server, no network)."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron.cli.app import app
from catneuron.report import write_report


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder."),
    out: Path = typer.Option(None, help="Report folder (default RUN/report)."),
) -> None:
    """Write an HTML report of a run: config, training curves, Table 1 per concept, one page per neuron."""
    index = write_report(run, out)
    print(f"report: {index}")
