"""`catneuron visualize`: a neuron's optimal stimulus (projected gradient ascent) beside its top stimuli."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from catneuron.analysis.concepts import concept_slug
from catneuron.analysis.neuron_figures import TOLERANCE, Stimuli, optimal_figure
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import CHECKPOINT, DEVICE, parse_neuron
from catneuron.data.images import read_folder
from catneuron.errors import UserError
from catneuron.store import runs


def concept_neuron(run: Path, concept: str, stage: int | None = None) -> str:
    """The best neuron `catneuron evaluate` found for a concept (results/<concept>.json): best_neuron.id, or
    with `stage`, the best of that stage (best_by_stage)."""
    path = runs.results_dir(run) / f"{concept_slug(concept)}.json"
    if not path.is_file():
        raise UserError(f"--concept {concept}: no {path} (run `catneuron evaluate {run} --concept {concept}` first)")
    try:
        result = json.loads(path.read_text())
        if stage is None:
            return str(result["best_neuron"]["id"])
        by_stage = {int(r["stage"]): str(r["id"]) for r in result["best_by_stage"]}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise UserError(f"--concept {concept}: {path} has no best_neuron.id and best_by_stage") from None
    if stage not in by_stage:
        raise UserError(f"--stage {stage}: {path} has best neurons of stages {', '.join(map(str, sorted(by_stage)))}")
    return by_stage[stage]


@app.command()
def visualize(
    run: Path = typer.Argument(..., help="Run folder."),
    neuron: str = typer.Option(None, help="Neuron id, e.g. s3.pool.m2.y4.x5."),
    concept: str = typer.Option(None, help="Use the best neuron `evaluate` found for this concept."),
    stage: int = typer.Option(None, help="With --concept: the best neuron of this stage (e.g. 3), not of all."),
    images: str = typer.Option(None, help="Folder of images (recursive) to take the top stimuli from."),
    top: int = typer.Option(16, help="How many top stimuli to show."),
    starts: int = typer.Option(8, help="Random starts of the optimization."),
    steps: int = typer.Option(300, help="Iteration budget per start."),
    minutes: float = typer.Option(None, help="Time budget of the search (default: none)."),
    tolerance: float = typer.Option(TOLERANCE, help="A start has converged when f gains less than this times "
                                                    "max(1, |f|) over 10 iterations."),
    seed: int = typer.Option(0, help="Seed of the random starts."),
    device: str = DEVICE,
    checkpoint_choice: str = CHECKPOINT,
) -> None:
    """Find x* = argmax f(x) subject to ||x||_2 = 1 for one neuron, and show it beside its top stimuli."""
    if (neuron is None) == (concept is None):
        raise UserError("--neuron / --concept: give exactly one")
    if stage is not None and concept is None:
        raise UserError(f"--stage {stage}: picks the best neuron of a stage for a --concept; give --concept")
    for flag, value, least in (("--starts", starts, 1), ("--steps", steps, 0), ("--top", top, 1)):
        checks.at_least(flag, value, least)
    checks.positive("--minutes", minutes)
    checks.positive("--tolerance", tolerance)
    text = neuron if neuron is not None else concept_neuron(run, concept, stage)
    network, ckpt = runs.load_network(run, runs.device(device), checkpoint_choice)
    checks.run_outputs(run)
    nid = parse_neuron(network, text, "--neuron" if neuron is not None else f"--concept {concept}: neuron")
    stimuli = None
    if images is not None:
        found = read_folder(images, network.config.input_size, network.config.channels, flag="--images")
        stimuli = Stimuli(found.images, [str(p) for p in found.paths], images)
    budget = f"{steps} iterations" + (f" or {minutes:g} min" if minutes else "")
    print(f"{nid}: optimal stimulus from {starts} random starts, until f gains less than {tolerance:g} x max(1, |f|) "
          f"over 10 iterations or {budget}")
    extra = {"checkpoint": str(runs.chosen_checkpoint(run, checkpoint_choice)), "checkpoint_step": ckpt.step}
    extra |= {"from_concept": concept} if concept is not None else {}
    record = optimal_figure(run, network, nid, stimuli, top, starts, steps, seed, tolerance,
                            minutes * 60 if minutes else None, extra=extra)
    values = [s["value"] for s in record["all_starts"]]
    best = record["convergence"]
    print(f"{nid}: f(x*) = {record['value']:.4g} after {best['iterations']} iterations; {record['stopping']} "
          f"({record['converged_starts']} of {starts} starts converged; values {min(values):.4g}..{max(values):.4g})")
    if record["top_stimuli"]:
        first = record["top_stimuli"][0]
        print(f"top stimulus in {images}: {first['path']} ({first['value']:.4g})")
    print(f"figure {run / record['figure']}\nresults {run / record['results']}")
