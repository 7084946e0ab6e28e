"""`catneuron evaluate`: every neuron scored as a concept detector, with the paper's baselines."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron.analysis.concepts import parse_concepts
from catneuron.analysis.null import check_null_seeds
from catneuron.analysis.run_evaluation import concept_sets, concept_slug, evaluate_run
from catneuron.analysis.table import print_table
from catneuron.cli.app import app
from catneuron.errors import UserError
from catneuron.store import checkpoint, runs


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder."),
    positives: list[str] = typer.Option(..., help="Images of the concept: DIR, or NAME=DIR (repeat for more "
                                                  "concepts; the first sets the positive:negative ratio)."),
    negatives: str = typer.Option(..., help="Folder of distractor images."),
    concept: str = typer.Option("faces", help="Name of a concept given as a bare DIR."),
    json_file: Path = typer.Option(None, "--json", help="Also write the results JSON here (one concept)."),
    linear_filters: int = typer.Option(100_000, help="Random training images tried as linear filters."),
    training_data: str = typer.Option(None, help="Training data for the linear filters (default: the run's)."),
    null_seeds: int = typer.Option(0, help="Scan this many random-weights networks (seeds 1..S) for the null of "
                                           "each stage's best unit (0: none; at least 2)."),
    probe: bool = typer.Option(False, help="Per stage, a held-out logistic regression on all its units, trained "
                                           "against random weights."),
) -> None:
    """Scan every neuron of every sublayer of every stage (20 thresholds, AUC) and the baselines."""
    check_null_seeds(null_seeds)
    concepts = parse_concepts(positives, concept)
    if json_file and len(concepts) > 1:
        raise UserError("--json: one concept at a time (every concept is written to RUN/results/NAME.json)")
    model = checkpoint.read_config(runs.checkpoint_path(run)).model
    results = [evaluate_run(run, test, name, linear_filters, training_data, json_file,
                            null_seeds=null_seeds, probe=probe)
               for name, test in concept_sets(concepts, negatives, model.input_size, model.channels)]
    print_table(results)
    for result in results:
        print(f"results: {runs.results_dir(run) / (concept_slug(result['concept']) + '.json')}")
