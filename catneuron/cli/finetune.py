"""`catneuron finetune`: logistic classifiers on the top stage, then the whole network fine-tuned."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron.analysis.finetune import Schedule, ensure_new, finetune_run, load_data
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.store import checkpoint, runs


def _score(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _rows(results: dict) -> list[tuple[str, float | None]]:
    rows = [("frozen top-1", results["frozen"]["top1"]), ("fine-tuned top-1", results["finetuned"]["top1"])]
    if results["frozen"]["top5"] is not None:
        rows += [("frozen top-5", results["frozen"]["top5"]), ("fine-tuned top-5", results["finetuned"]["top5"])]
    return rows


@app.command()
def finetune(
    run: Path = typer.Argument(..., help="A trained run folder."),
    train: Path = typer.Option(..., help="Labelled images: one sub-folder of images per class."),
    val: Path = typer.Option(None, help="Validation images, same layout (default: split --train)."),
    split: float = typer.Option(None, help="Fraction of --train held out for validation when there is no --val "
                                           "(default 0.5, the paper's random half)."),
    epochs: int = typer.Option(10, help="Epochs of each phase (frozen, then fine-tuned)."),
    batch_size: int = typer.Option(100, help="Minibatch size."),
    lr: float = typer.Option(1e-2, help="Adam learning rate of phase 1 (the classifiers alone)."),
    finetune_lr: float = typer.Option(1e-3, help="Adam learning rate of phase 2 (network and classifiers)."),
    seed: int = typer.Option(0, help="Seed of the split and the batch order."),
    out: Path = typer.Option(None, help="New run folder (default RUN-finetune, or RUN-scratch)."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Same model and schedule from random weights."),
    compare: bool = typer.Option(False, "--compare", help="Run pretrained and from-scratch, side by side "
                                                          "(the scratch run goes to OUT-scratch)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Train one-vs-all logistic classifiers on the top stage, then fine-tune the whole network with them."""
    dev = runs.device(device)
    for flag, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        checks.at_least(flag, value, 1)
    checks.positive("--lr", lr)
    checks.positive("--finetune-lr", finetune_lr)
    checks.fraction("--split", split)
    schedule = Schedule(epochs=epochs, batch_size=batch_size, lr=lr, finetune_lr=finetune_lr, seed=seed)
    config = checkpoint.read_config(runs.checkpoint_path(run))
    out = out or run.resolve().with_name(f"{run.resolve().name}-{'scratch' if from_scratch else 'finetune'}")
    arms = [(False, out), (True, out.with_name(f"{out.name}-scratch"))] if compare else [(from_scratch, out)]
    for _, folder in arms:
        ensure_new(folder)
        checks.writable_folder(folder, "--out")
    train_set, val_set = load_data(config, train, val, split, seed)
    print(f"{len(train_set.classes)} classes: {len(train_set)} training, {len(val_set)} validation images")
    for folder, part in ((train, train_set), (val, val_set if val else None)):
        if part is not None and part.skipped:
            print(f"catneuron: skipped {len(part.skipped)} unreadable image(s) under {folder}")
    sources = {"train": str(train), "val": str(val) if val else None, "split": None if val else (split or 0.5)}
    results = {}
    for scratch, folder in arms:
        label = "from scratch" if scratch else "pretrained"
        print(f"{label}: {epochs} epoch(s) frozen, then {epochs} fine-tuning, into {folder}")
        results[label] = finetune_run(run, folder, train_set, val_set, schedule, scratch, dev, sources=sources)
    labels = list(results)
    print(f"{'validation':<18}" + "".join(f"{label:>14}" for label in labels))
    for i, (name, _) in enumerate(_rows(results[labels[0]])):
        print(f"{name:<18}" + "".join(f"{_score(_rows(results[label])[i][1]):>14}" for label in labels))
