"""`catneuron demo`: the whole story on the embedded corpus, in minutes on a laptop CPU."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from catneuron.analysis.null import check_null_seeds
from catneuron.analysis.run_evaluation import evaluate_run
from catneuron.analysis.table import print_table
from catneuron.cli.app import app
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.errors import UserError
from catneuron.model import config as configs
from catneuron.report.site import write_report
from catneuron.store import runs
from catneuron.train.trainer import Trainer


@app.command()
def demo(
    out: Path = typer.Option(None, help="Run folder (default runs/demo-<time>)."),
    minutes: float = typer.Option(10.0, help="Training time budget in minutes."),
    steps: int = typer.Option(1_000_000, help="Stop training at this many steps if the time budget lasts."),
    preset: str = typer.Option("small", help="Model preset."),
    linear_filters: int = typer.Option(100_000, help="Random training images tried as linear filters."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    null_seeds: int = typer.Option(5, help="Random-weights networks scanned for the null of each stage's best unit."),
) -> None:
    """Train on unlabeled embedded images, find the face neuron, print Table 1 against the paper."""
    check_null_seeds(null_seeds)
    if minutes <= 0:
        raise UserError(f"--minutes {minutes}: must be positive")
    out = out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if runs.checkpoint_path(out).exists():
        raise UserError(f"--out {out}: already holds a run; choose another folder")
    cfg = configs.preset(preset)
    corpus = EmbeddedCorpus(size=cfg.model.input_size, channels=cfg.model.channels)
    print(f"1/3 training the {preset} preset on {corpus.description} for up to {minutes:g} min into {out}")
    trainer = Trainer(cfg, corpus, out, runs.device(device), data_spec="embedded")
    trainer.fit(steps, max_seconds=minutes * 60)
    test = corpus.test_set()
    print(f"2/3 scanning every neuron on {len(test.labels)} held-out test images "
          f"({test.positive_fraction:.1%} faces; the paper's test set has 35.2%)")
    result = evaluate_run(out, test, "faces", n_filters=linear_filters, null_seeds=null_seeds, probe=True)
    print("3/3 results")
    print_table([result])
    print(f"report: {write_report(out)}")
    print(f"run folder: {out}")
