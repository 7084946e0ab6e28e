"""`catneuron train`: unsupervised training, one process or Downpour SGD on Ray."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import typer

from catneuron.analysis.concepts import parse_concepts
from catneuron.analysis.emergence import watch_sets
from catneuron.cli import checks
from catneuron.cli.app import app
from catneuron.cli.options import PRECISION, SEED, resolve_config, train_overrides
from catneuron.data.sources import open_source
from catneuron.errors import UserError
from catneuron.model import config as configs
from catneuron.parallel.grid import parse_grid
from catneuron.parallel.launch import leads
from catneuron.store import checkpoint, runs
from catneuron.store import lock as runs_lock
from catneuron.train.events import check_wandb
from catneuron.train.loop import TrainResult
from catneuron.train.signals import Interrupted
from catneuron.train.trainer import Trainer
from catneuron.train.watch import Watch, WatchOptions

if TYPE_CHECKING:
    from catneuron.downpour.driver import DownpourOptions

DEFAULT_STEPS = 1000


class Runner(Protocol):
    """A Trainer, a ModelParallel or a Downpour: `leader` reports; `fit` gives its result there (None elsewhere)."""

    @property
    def leader(self) -> bool: ...

    def fit(self, steps: int | None, max_seconds: float | None = None) -> TrainResult | None: ...


def make_watch(concepts: list[str] | None, negatives: str | None, config: configs.Config, options: WatchOptions,
               limit: int) -> Watch:
    """`--watch NAME=DIR ... --watch-negatives DIR`: the watch sets at the model's size, checked before training."""
    if not concepts or not negatives:
        raise UserError("--watch and --watch-negatives: give both (NAME=DIR of the concept, DIR of distractors)")
    if limit < 2:
        raise UserError(f"--watch-images {limit}: must be at least 2")
    options.validate()
    sets = watch_sets(parse_concepts(concepts, "faces", "--watch"), negatives, config.model.input_size,
                      config.model.channels, limit)
    return Watch(sets, options)


@app.command()
@checks.out_removed_if_refused
def train(
    data: str = typer.Option(None, help="Image folder (recursive), WebDataset shards, or 'embedded'. With "
                             "--resume, the run's own (config.json) when not given."),
    preset: str = typer.Option(None, help="Preset: tiny, small or paper (default small)."),
    config: str = typer.Option(None, help="A YAML config file."),
    steps: int = typer.Option(None, help=f"Train until this many steps in total (default {DEFAULT_STEPS}; with "
                              "--minutes alone, until the time is up)."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its checkpoint."),
    auto_resume: bool = typer.Option(False, help="Continue the run in --out if it holds a checkpoint (the same "
                                     "flags must give its config), else start it: a requeued job reruns its command."),
    minutes: float = typer.Option(None, help="Stop after this many minutes (checkpoint kept)."),
    lr: float = typer.Option(None, help="Learning rate (overrides the config)."),
    optimizer: str = typer.Option(None, help="adagrad or sgd (overrides the config)."),
    seed: int = SEED,
    precision: str = PRECISION,
    no_lcn: bool = typer.Option(False, "--no-lcn", help="The paper's ablation: stages without LCN."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    replicas: int = typer.Option(1, help="Downpour SGD on Ray: model replicas (1 and no --address: no Ray)."),
    ps_shards: int = typer.Option(1, help="Downpour: parameter-server shards (per block with --partitions)."),
    fetch_every: int = typer.Option(1, help="Downpour: a replica fetches parameters every P steps."),
    push_every: int = typer.Option(1, help="Downpour: a replica pushes its accumulated gradients every G steps."),
    address: str = typer.Option(None, help="Downpour: join the Ray cluster at this address (e.g. auto)."),
    on_replica_failure: str = typer.Option("replace", help="Downpour: replace a dead replica (the run stops if "
                                           "it dies 3 times within a minute), drop it, or stop the run."),
    ps_snapshot_minutes: float = typer.Option(5.0, help="Downpour: shards snapshot their state to RUN/ps this "
                                              "often."),
    partitions: str = typer.Option("1x1", help="Model parallelism: one replica as R x C processes, each owning "
                                   "a block of every stage's positions (e.g. 2x2); with Downpour, each replica."),
    threads: int = typer.Option(None, help="Torch threads per process (default: 1 per rank with --partitions)."),
    watch: list[str] = typer.Option(None, help="Watch a concept as the run trains: NAME=DIR of its images (repeat "
                                               "for more; the first sets the ratio and the best checkpoint)."),
    watch_negatives: str = typer.Option(None, help="Watch: the distractor images."),
    watch_every: int = typer.Option(None, help="Watch: scan every N images (default: as often as the budget allows)."),
    watch_minutes: float = typer.Option(None, help="Watch: scan every M minutes of training instead."),
    watch_images: int = typer.Option(1000, help="Watch: at most this many images per concept (a stratified subset)."),
    watch_budget: float = typer.Option(0.1, help="Watch: the largest share of the run's time the scans may take "
                                                 "(1: never widen the interval)."),
    set_: list[str] = typer.Option(None, "--set", help="Override any config field: FIELD=VALUE, e.g. "
                                   "model.sparsity=0.2, model.stages[0].maps=16, train.lr=0.01 (repeat; checked "
                                   "as the YAML file is, docs/config.md)."),
    wandb: str = typer.Option(None, help="Also log the metrics to W&B, in this project (needs catneuron[wandb]; "
                                         "off unless given: nothing is sent otherwise)."),
) -> None:
    """Train the network on unlabeled images."""
    dev = runs.device(device)
    grid = parse_grid(partitions)
    if steps is not None:
        checks.step_count("--steps", steps)
    elif minutes is None:
        steps = DEFAULT_STEPS  # with --minutes alone, the time decides
    checks.positive("--minutes", minutes)
    checks.at_least("--replicas", replicas, 1)
    if threads is not None:
        checks.at_least("--threads", threads, 1)
    if resume and auto_resume:
        raise UserError("--resume and --auto-resume: give one")
    if resume and not runs.checkpoint_path(out).is_file():
        raise UserError(f"--resume: {out} has no checkpoint to resume from")
    checks.writable_folder(out, "--out")
    with runs_lock.writing(out) if leads() else nullcontext():
        resume = resume or (auto_resume and runs.checkpoint_path(out).is_file())
        given = {"--preset": preset, "--config": config, "--lr": lr, "--optimizer": optimizer, "--seed": seed,
                 "--precision": precision, "--no-lcn": no_lcn or None, "--set": set_ or None}
        if resume:
            if auto_resume:
                checks.same_config(new_config(given), checkpoint.read_config(runs.checkpoint_path(out)), out)
            else:
                checks.resume_keeps(given)
            cfg = checkpoint.read_config(runs.checkpoint_path(out))
            if data is None:
                data = runs.training_data(out)
            else:
                checks.same_data(data, checkpoint.read_extra(runs.checkpoint_path(out)).get("data"))
        else:
            if data is None:
                raise UserError("--data: needed to start a run (with --resume, the run's own is used)")
            cfg = new_config(given)
            if runs.checkpoint_path(out).is_file():
                raise UserError(f"--out {out}: already holds a run (use --resume, or another --out)")
        if wandb is not None:
            check_wandb()
        watcher = None
        if watch or watch_negatives:
            watcher = make_watch(watch, watch_negatives, cfg, WatchOptions(
                watch_every, watch_minutes * 60 if watch_minutes is not None else None, watch_budget), watch_images)
        downpour = None
        if replicas > 1 or address is not None:
            from catneuron.downpour.driver import DownpourOptions

            downpour = DownpourOptions(replicas, ps_shards, fetch_every, push_every, address, on_replica_failure,
                                       ps_snapshot_minutes * 60, partitions=grid, device=dev)
        elif (ps_shards, fetch_every, push_every) != (1, 1, 1):
            raise UserError("--ps-shards, --fetch-every and --push-every need --replicas > 1 or --address")
        runner, what = make_runner(cfg, data, out, resume, grid, threads, dev, watcher, downpour, wandb)
        if runner.leader:
            print(f"training {cfg.preset} on {what}")
        try:
            result = runner.fit(steps, max_seconds=minutes * 60 if minutes else None)
        except Interrupted as e:  # saved, and said how to continue: the status a shell gives a signal's death
            raise typer.Exit(128 + e.signum) from None
    if result is not None:
        print(f"step {result.step}: checkpoint {runs.checkpoint_path(out)}")


def new_config(given: dict[str, Any]) -> configs.Config:
    """The config of a new run from the flags `train` was given (None: not given)."""
    cfg = resolve_config(given["--preset"], given["--config"])
    overrides = train_overrides(lr=given["--lr"], optimizer=given["--optimizer"], seed=given["--seed"],
                                precision=given["--precision"])
    cfg = configs.replace(cfg, train=overrides, model={"lcn": False} if given["--no-lcn"] else {})
    return configs.with_sets(cfg, given["--set"] or [])


def make_runner(cfg: configs.Config, data: str, out: Path, resume: bool, grid: tuple[int, int], threads: int | None,
                dev: torch.device, watch: Watch | None, downpour: DownpourOptions | None,
                wandb: str | None = None) -> tuple[Runner, str]:
    """What `train` runs, built one way for the three ways of training, and what it trains on and into: one
    process (a Trainer), one replica as R*C ranks on this machine or the rank torchrun started this process as
    (ModelParallel; docs/distributed.md), or Downpour SGD on Ray over Trainer's model, data and run folder."""
    if downpour is None and grid != (1, 1):
        from catneuron.parallel.grid import plan
        from catneuron.parallel.trainer import ModelParallel

        plan(cfg.model, grid)
        threads = threads or 1
        each = "a GPU and " if dev.type == "cuda" else ""
        blocks = f"{grid[0]}x{grid[1]} blocks ({grid[0] * grid[1]} processes, {each}{threads} thread(s) each)"
        parallel = ModelParallel(cfg, data, out, grid, threads, resume, watch, dev)
        parallel.wandb = wandb
        return parallel, f"{data} into {out} as {blocks}"
    if threads is not None:
        torch.set_num_threads(threads)
    source = open_source(data, cfg.model.input_size, cfg.model.channels)
    here = torch.device("cpu") if downpour else dev  # Downpour's driver only maps rows: the replicas compute
    trainer = Trainer.resume(out, source, here) if resume else Trainer(cfg, source, out, here, data_spec=data)
    trainer.watch, trainer.wandb = watch, wandb
    if downpour is None:
        return trainer, f"{source.description} into {out}"
    from catneuron.downpour.driver import Downpour

    how = f"{downpour.replicas} replicas, {downpour.ps_shards} parameter shards"
    if grid != (1, 1):
        how = (f"{downpour.replicas} replicas of {grid[0]}x{grid[1]} blocks, {downpour.ps_shards} parameter "
               f"shard(s) per block")
    return Downpour(trainer, downpour), f"{source.description} into {out} with Downpour SGD ({how})"
