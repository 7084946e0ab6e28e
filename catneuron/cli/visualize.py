"""`catneuron visualize`: a neuron's optimal stimulus (projected gradient ascent) beside its top stimuli."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from catneuron.analysis.concepts import concept_slug
from catneuron.analysis.features import as_float
from catneuron.analysis.optimal import optimal_stimulus, plot_optimal
from catneuron.analysis.stimuli import top_stimuli
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import parse_neuron
from catneuron.data.images import read_folder
from catneuron.errors import UserError
from catneuron.store import files, runs


def concept_neuron(run: Path, concept: str) -> str:
    """The best neuron `catneuron evaluate` found for a concept (results/<concept>.json, best_neuron.id)."""
    path = runs.results_dir(run) / f"{concept_slug(concept)}.json"
    if not path.is_file():
        raise UserError(f"--concept {concept}: no {path} (run `catneuron evaluate {run} --concept {concept}` first)")
    try:
        return str(json.loads(path.read_text())["best_neuron"]["id"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"--concept {concept}: {path} has no best_neuron.id") from None


@app.command()
def visualize(
    run: Path = typer.Argument(..., help="Run folder."),
    neuron: str = typer.Option(None, help="Neuron id, e.g. s3.pool.m2.y4.x5."),
    concept: str = typer.Option(None, help="Use the best neuron `evaluate` found for this concept."),
    images: str = typer.Option(None, help="Folder of images (recursive) to take the top stimuli from."),
    top: int = typer.Option(16, help="How many top stimuli to show."),
    starts: int = typer.Option(8, help="Random starts of the optimization."),
    steps: int = typer.Option(300, help="Most iterations per start."),
    seed: int = typer.Option(0, help="Seed of the random starts."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Find x* = argmax f(x) subject to ||x||_2 = 1 for one neuron, and show it beside its top stimuli."""
    if (neuron is None) == (concept is None):
        raise UserError("--neuron / --concept: give exactly one")
    for flag, value, least in (("--starts", starts, 1), ("--steps", steps, 0), ("--top", top, 1)):
        if value < least:
            raise UserError(f"{flag} {value}: must be at least {least}")
    text = neuron if neuron is not None else concept_neuron(run, concept)
    network, _ = runs.load_network(run, runs.device(device))
    checks.run_outputs(run)
    nid = parse_neuron(network, text, "--neuron" if neuron is not None else f"--concept {concept}: neuron")
    found = None if images is None else read_folder(images, network.config.input_size, network.config.channels,
                                                    flag="--images")
    result = optimal_stimulus(network, nid, starts=starts, steps=steps, seed=seed)
    best = result.starts[result.best]
    top_images = top_values = None
    top_records = []
    if found is not None:
        index, top_values = top_stimuli(network, found.images, nid, top)
        top_images = as_float(found.images[index]).numpy()
        top_records = [{"path": str(found.paths[i]), "value": float(v)} for i, v in zip(index, top_values, strict=True)]
    figure = runs.figures_dir(run) / f"optimal_{nid}.png"
    plot_optimal(result.x[result.best], best.value, top_images, top_values, figure,
                 f"{nid}: optimal stimulus" + (f" and top {len(top_records)} of {images}" if top_records else ""))
    record = {
        "neuron": str(nid), "stage": nid.stage, "sublayer": nid.sublayer, "value": best.value,
        "converged": best.converged, "starts": starts, "steps": steps, "seed": seed,
        "convergence": best.to_dict(), "all_starts": [c.to_dict() for c in result.starts],
        "images": images, "top_stimuli": top_records, "figure": str(figure.relative_to(run)),
    } | ({"from_concept": concept} if concept is not None else {})
    out = runs.results_dir(run) / f"optimal_{nid}.json"
    files.write_json(out, record)
    print(f"{nid}: f(x*) = {best.value:.4g} ({best.iterations} iterations, stopped on {best.reason}; "
          f"best of {starts} starts, values {min(c.value for c in result.starts):.4g}.."
          f"{max(c.value for c in result.starts):.4g})")
    if top_records:
        print(f"top stimulus in {images}: {top_records[0]['path']} ({top_records[0]['value']:.4g})")
    print(f"figure {figure}\nresults {out}")
