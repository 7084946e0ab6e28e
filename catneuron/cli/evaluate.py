"""`catneuron evaluate`: every neuron scored as a concept detector, with the paper's baselines."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from catneuron.analysis.concepts import concept_sets, concept_slug, parse_concepts
from catneuron.analysis.null import check_null_seeds
from catneuron.analysis.run_evaluation import evaluate_run
from catneuron.analysis.table import print_table
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import CHECKPOINT, DEVICE
from catneuron.data.embedded import PAPER_POSITIVE_FRACTION
from catneuron.errors import UserError
from catneuron.store import checkpoint, runs


def _keeps_other_results(run: Path, concept: str) -> None:
    """Refuse to overwrite the results of another concept whose name gives the same file name."""
    path = runs.results_dir(run) / f"{concept_slug(concept)}.json"
    try:
        before = json.loads(path.read_text()).get("concept") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return  # an unreadable results file is replaced
    if before is not None and before != concept:
        raise UserError(f"concept {concept!r}: {path} holds the results of concept {before!r}, which has the "
                        "same file name; rename the concept")


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
    positive_fraction: float = typer.Option(None, help="Subsample each concept's test set to this share of "
                                                       "positives (default: the face set's own ratio)."),
    paper_ratio: bool = typer.Option(False, "--paper-ratio", help="The paper's share of positives, 35.2%, so the "
                                                                  "'paper %' column compares like with like."),
    null_seeds: int = typer.Option(0, help="Scan this many random-weights networks (seeds 1..S) for the null of "
                                           "each stage's best unit (0: none; at least 2)."),
    probe: bool = typer.Option(False, help="Per stage, a held-out logistic regression on all its units, trained "
                                           "against random weights."),
    checkpoint_choice: str = CHECKPOINT,
    device: str = DEVICE,
) -> None:
    """Scan every neuron of every sublayer of every stage (20 thresholds, AUC) and the baselines."""
    checks.at_least("--linear-filters", linear_filters, 1)
    check_null_seeds(null_seeds)
    concepts = parse_concepts(positives, concept)
    if json_file and len(concepts) > 1:
        raise UserError("--json: one concept at a time (every concept is written to RUN/results/NAME.json)")
    fraction = check_fraction(positive_fraction, paper_ratio)
    dev = runs.device(device)
    model = checkpoint.read_config(runs.chosen_checkpoint(run, checkpoint_choice)).model
    checks.run_outputs(run)
    for name, _ in concepts:
        _keeps_other_results(run, name)
    if json_file:
        checks.writable_file(json_file, "--json")
    folders = dict(concepts)
    results = []
    for name, test in concept_sets(concepts, negatives, model.input_size, model.channels, fraction):
        inputs = {"positives": str(Path(folders[name]).resolve()), "negatives": str(Path(negatives).resolve()),
                  "positive_fraction_requested": fraction}
        results.append(evaluate_run(run, test, name, linear_filters, training_data, json_file, inputs,
                                    null_seeds=null_seeds, probe=probe, checkpoint=checkpoint_choice, device=dev))
    print_table(results, Console())
    for result in results:
        print(f"results: {runs.results_dir(run) / (concept_slug(result['concept']) + '.json')}, every unit's "
              f"scores in {run / result['unit_scores']['file']}")


def check_fraction(positive_fraction: float | None, paper_ratio: bool) -> float | None:
    """--positive-fraction F and --paper-ratio as one share of positives (None: keep the face set's)."""
    if paper_ratio and positive_fraction is not None:
        raise UserError("--paper-ratio and --positive-fraction: give one (--paper-ratio is --positive-fraction "
                        f"{PAPER_POSITIVE_FRACTION:.3f})")
    checks.fraction("--positive-fraction", positive_fraction)
    return PAPER_POSITIVE_FRACTION if paper_ratio else positive_fraction
