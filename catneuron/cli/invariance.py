"""`catneuron invariance`: a neuron's mean response against scale, translation and rotation (Figures 4, 5)."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron.analysis.invariance import out_of_plane_curve, read_views
from catneuron.analysis.neuron_figures import invariance_figure
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import parse_neuron
from catneuron.data.images import read_folder
from catneuron.errors import UserError
from catneuron.store import runs


@app.command()
def invariance(
    run: Path = typer.Argument(..., help="Run folder."),
    neuron: str = typer.Option(..., help="Neuron id, e.g. s3.pool.m2.y4.x5."),
    images: str = typer.Option(..., help="Folder of images (e.g. faces); the first --n in sorted order are used."),
    n: int = typer.Option(10, "--n", help="How many images to average over (the paper: 10)."),
    out_of_plane: str = typer.Option(None, help="Views ordered by angle (file names ending in the angle, or "
                                                "sorted names); one sub-folder per object."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Mean response over a few images as they are scaled, shifted and rotated; CSV and PNG."""
    if n < 1:
        raise UserError(f"--n {n}: must be at least 1")
    network, _ = runs.load_network(run, runs.device(device))
    checks.run_outputs(run)
    nid = parse_neuron(network, neuron)
    size, channels = network.config.input_size, network.config.channels
    found = read_folder(images, size, channels, flag="--images")
    chosen = found.images[:n]
    if len(chosen) < n:
        print(f"catneuron: --images {images}: only {len(chosen)} image(s), averaging over those")
    extra = []
    if out_of_plane is not None:
        sequences, angles, unit = read_views(out_of_plane, size, channels)
        extra.append(out_of_plane_curve(network, sequences, angles, unit, nid))
    curves, csv_path, png_path = invariance_figure(run, network, nid, chosen, images, extra)
    for c in curves:
        low, high = c.mean.min(), c.mean.max()
        print(f"{c.transform:>12}: mean response {low:.4g} .. {high:.4g} over {c.amounts[0]:g} .. {c.amounts[-1]:g} "
              f"({c.unit})")
    print(f"data {csv_path}\nfigure {png_path}")
