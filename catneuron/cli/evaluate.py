"""`catneuron evaluate`: every neuron scored as a concept detector, with the paper's baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron import runs
from catneuron.analysis.run_evaluation import concept_slug, evaluate_run, labelled_folders
from catneuron.analysis.table import print_table
from catneuron.cli.app import app
from catneuron.train import checkpoint


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder."),
    positives: str = typer.Option(..., help="Folder of images of the concept."),
    negatives: str = typer.Option(..., help="Folder of distractor images."),
    concept: str = typer.Option("faces", help="Name of the concept."),
    json_file: Path = typer.Option(None, "--json", help="Also write the results JSON here."),
    linear_filters: int = typer.Option(100_000, help="Random training images tried as linear filters."),
    training_data: str = typer.Option(None, help="Training data for the linear filters (default: the run's)."),
) -> None:
    """Scan every neuron of every sublayer of every stage (20 thresholds, AUC) and the baselines."""
    model = checkpoint.read_config(runs.checkpoint_path(run)).model
    test = labelled_folders(positives, negatives, model.input_size, model.channels)
    result = evaluate_run(run, test, concept, linear_filters, training_data, json_file)
    print_table([result])
    print(f"results: {runs.results_dir(run) / (concept_slug(concept) + '.json')}")
