"""`catneuron demo`: the whole story on the embedded corpus, in minutes on a laptop CPU."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer
from rich.console import Console

from catneuron.analysis.neuron_figures import Stimuli, invariance_figure, optimal_figure
from catneuron.analysis.null import check_null_seeds
from catneuron.analysis.run_evaluation import evaluate_run
from catneuron.analysis.table import print_table
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import PRECISION, SEED, train_overrides
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.data.labelled import LabelledImages
from catneuron.errors import UserError
from catneuron.model import config as configs
from catneuron.model.network import NeuronId
from catneuron.report.site import write_report
from catneuron.store import lock, runs
from catneuron.train.trainer import Trainer

OPTIMAL_SECONDS = 20.0
OPTIMAL_SHARE = 0.05
"""Time budget of each stage's optimal-stimulus search: 5% of the training budget, at most 20 s, so the
figures of all three stages add at most about a minute to the demo (stage-1 units converge in seconds;
stage 3 of `small` reaches 99% of its final value in about 20 iterations, 10-30 s on 2 loaded cores)."""


def stage_figures(run: Path, test: LabelledImages, result: dict, seconds: float) -> None:
    """The paper's Figures 3 and 4 for the best neuron of every stage: optimal stimulus beside the top test
    images (a search of at most `seconds`), and invariance curves over 10 test faces; written where
    `visualize` and `invariance` write theirs."""
    network, _ = runs.load_network(run)
    stimuli = Stimuli(test.images, [f"test image {i}" for i in range(len(test.labels))], "the test set")
    faces = test.images[test.labels == 1][:10]
    for best in result["best_by_stage"]:
        nid = NeuronId.parse(best["id"])
        record = optimal_figure(run, network, nid, stimuli, top=16, starts=4, max_seconds=seconds,
                                extra={"from_concept": result["concept"]})
        invariance_figure(run, network, nid, faces, "test-set faces")
        print(f"  stage {nid.stage}, {nid}: optimal stimulus f = {record['value']:.4g} "
              f"({record['stopping']}); invariance curves over {len(faces)} faces")


def train_on_corpus(cfg: configs.Config, out: Path, steps: int, minutes: float, device: torch.device) -> EmbeddedCorpus:
    """Step 1: train `cfg` on the embedded corpus into `out`. The training seed fixes the initial weights and
    the order of the training images; the corpus's split and test set do not depend on it, so two seeds are
    two replicates scored on the same images."""
    corpus = EmbeddedCorpus(size=cfg.model.input_size, channels=cfg.model.channels)
    print(f"1/4 training the {cfg.preset} preset (seed {cfg.train.seed}, {cfg.train.precision}) on "
          f"{corpus.description} for up to {minutes:g} min into {out}")
    Trainer(cfg, corpus, out, device, data_spec="embedded").fit(steps, max_seconds=minutes * 60)
    return corpus


@app.command()
def demo(
    out: Path = typer.Option(None, help="Run folder (default runs/demo-<time>)."),
    minutes: float = typer.Option(7.0, help="Training time budget in minutes (the scan, the null of 5 random networks, "
                                             "the probes and the figures take a few more: about 12 in all)."),
    steps: int = typer.Option(1_000_000, help="Stop training at this many steps if the time budget lasts."),
    preset: str = typer.Option("small", help="Model preset."),
    linear_filters: int = typer.Option(100_000, help="Random training images tried as linear filters."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    null_seeds: int = typer.Option(5, help="Random-weights networks scanned for the null of each stage's best unit."),
    seed: int = SEED,
    precision: str = PRECISION,
) -> None:
    """Train on unlabeled embedded images, find the face neuron, print Table 1 against the paper."""
    checks.positive("--minutes", minutes)
    checks.step_count("--steps", steps)
    checks.at_least("--linear-filters", linear_filters, 1)
    check_null_seeds(null_seeds)
    overrides = train_overrides(seed=seed, precision=precision)
    out = out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    if runs.checkpoint_path(out).exists():
        raise UserError(f"--out {out}: already holds a run; choose another folder")
    checks.writable_folder(out, "--out")
    with lock.writing(out):
        cfg = configs.replace(configs.preset(preset), train=overrides)
        corpus = train_on_corpus(cfg, out, steps, minutes, runs.device(device))
        test = corpus.test_set()
        print(f"2/4 scanning every neuron on {len(test.labels)} held-out test images "
              f"({test.positive_fraction:.1%} faces; the paper's test set has 35.2%)")
        result = evaluate_run(out, test, "faces", n_filters=linear_filters, null_seeds=null_seeds, probe=True,
                              inputs={"test_set": f"embedded corpus test set ({corpus.description})"})
        print("3/4 results")
        print_table([result], Console())
        print("4/4 the best neuron of each stage: optimal stimulus and invariance curves (the paper's Figures 3, 4)")
        stage_figures(out, test, result, min(OPTIMAL_SECONDS, OPTIMAL_SHARE * minutes * 60))
        print(f"report: {write_report(out)}")
        print(f"run folder: {out}")
