"""`catneuron table`: the whole Table 1 for a corpus, comparison models included."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer
from rich.console import Console

from catneuron.analysis.ablations import build_table
from catneuron.analysis.concepts import concept_sets, parse_concepts
from catneuron.analysis.null import check_null_seeds
from catneuron.analysis.table import print_full_table
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import DEVICE, resolve_config
from catneuron.store import runs
from catneuron.train.trainer import train_run


@app.command()
def table(
    data: str = typer.Option(..., help="Unlabeled training data (folder, shards or 'embedded')."),
    positives: list[str] = typer.Option(..., help="NAME=DIR per concept (the first sets the ratio)."),
    negatives: str = typer.Option(..., help="Folder of distractor images."),
    control_data: str = typer.Option(None, help="The same corpus with faces removed (e.g. ingest --exclude-faces)."),
    preset: str = typer.Option(None, help="Preset (default small)."),
    config: str = typer.Option(None, help="A YAML config file."),
    steps: int = typer.Option(2000, help="Training steps for every model (the same budget)."),
    out: Path = typer.Option(Path("runs/table"), help="Folder for the models and table.json (resumable)."),
    linear_filters: int = typer.Option(100_000, help="Random training images tried as linear filters."),
    centroids: int = typer.Option(1000, help="K-means centroids."),
    null_seeds: int = typer.Option(5, help="Random-weights networks scanned for the null of each stage's best unit "
                                           "(0: none)."),
    device: str = DEVICE,
) -> None:
    """Train the network, its no-LCN and sigmoid-autoencoder variants and the no-face control; scan them all."""
    checks.step_count("--steps", steps)
    for flag, value in (("--linear-filters", linear_filters), ("--centroids", centroids)):
        checks.at_least(flag, value, 1)
    dev = runs.device(device)
    checks.data_exists(data, "--data")
    if control_data is not None:
        checks.data_exists(control_data, "--control-data")
    checks.writable_folder(out, "--out")
    check_null_seeds(null_seeds)
    cfg = resolve_config(preset, config)
    sets = concept_sets(parse_concepts(positives, "faces"), negatives, cfg.model.input_size, cfg.model.channels)
    summary = build_table(out, cfg, data, control_data, sets, steps, partial(train_run, device=dev), linear_filters,
                          centroids, null_seeds=null_seeds, device=dev)
    print_full_table(summary, Console())
    print(f"table: {out / 'table.json'}")
