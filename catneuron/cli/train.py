"""`catneuron train`: unsupervised training, one process or Downpour SGD on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from catneuron.analysis.concepts import parse_concepts
from catneuron.cli.app import app
from catneuron.cli.options import resolve_config
from catneuron.data.sources import open_source
from catneuron.errors import UserError
from catneuron.model import config as configs
from catneuron.store import checkpoint, runs
from catneuron.train.trainer import Trainer
from catneuron.train.watch import Watch, WatchOptions, watch_sets


def make_watch(concepts: list[str] | None, negatives: str | None, config: configs.Config, options: WatchOptions,
               limit: int) -> Watch:
    """`--watch NAME=DIR ... --watch-negatives DIR`: the watch sets at the model's size, checked before training."""
    if not concepts or not negatives:
        raise UserError("--watch and --watch-negatives: give both (NAME=DIR of the concept, DIR of distractors)")
    if limit < 2:
        raise UserError(f"--watch-images {limit}: must be at least 2")
    options.validate()
    sets = watch_sets(parse_concepts(concepts, "faces"), negatives, config.model.input_size, config.model.channels,
                      limit)
    return Watch(sets, options)


@app.command()
def train(
    data: str = typer.Option(..., help="Image folder (recursive), WebDataset shards, or 'embedded'."),
    preset: str = typer.Option(None, help="Preset: tiny, small or paper (default small)."),
    config: str = typer.Option(None, help="A YAML config file."),
    steps: int = typer.Option(1000, help="Train until this many steps in total."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its checkpoint."),
    minutes: float = typer.Option(None, help="Stop after this many minutes (checkpoint kept)."),
    lr: float = typer.Option(None, help="Learning rate (overrides the config)."),
    optimizer: str = typer.Option(None, help="adagrad or sgd (overrides the config)."),
    seed: int = typer.Option(None, help="Random seed (overrides the config)."),
    no_lcn: bool = typer.Option(False, "--no-lcn", help="The paper's ablation: stages without LCN."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    replicas: int = typer.Option(1, help="Downpour SGD on Ray: model replicas (1 and no --address: no Ray)."),
    ps_shards: int = typer.Option(1, help="Downpour: parameter-server shards."),
    fetch_every: int = typer.Option(1, help="Downpour: a replica fetches parameters every P steps."),
    push_every: int = typer.Option(1, help="Downpour: a replica pushes its accumulated gradients every G steps."),
    address: str = typer.Option(None, help="Downpour: join the Ray cluster at this address (e.g. auto)."),
    on_replica_failure: str = typer.Option("replace", help="Downpour: replace a dead replica, or continue "
                                           "with the others."),
    ps_snapshot_minutes: float = typer.Option(5.0, help="Downpour: shards snapshot their state to RUN/ps this "
                                              "often."),
    watch: list[str] = typer.Option(None, help="Watch a concept as the run trains: NAME=DIR of its images (repeat "
                                               "for more; the first sets the ratio and the best checkpoint)."),
    watch_negatives: str = typer.Option(None, help="Watch: the distractor images."),
    watch_every: int = typer.Option(None, help="Watch: scan every N images (default: as often as the budget allows)."),
    watch_minutes: float = typer.Option(None, help="Watch: scan every M minutes of training instead."),
    watch_images: int = typer.Option(1000, help="Watch: at most this many images per concept (a stratified subset)."),
    watch_budget: float = typer.Option(0.1, help="Watch: the largest share of the run's time the scans may take "
                                                 "(1: never widen the interval)."),
) -> None:
    """Train the network on unlabeled images."""
    dev = runs.device(device)
    if resume:
        if not runs.checkpoint_path(out).is_file():
            raise UserError(f"--resume: {out} has no checkpoint to resume from")
        ckpt_config = checkpoint.read_config(runs.checkpoint_path(out))
        source = open_source(data, ckpt_config.model.input_size, ckpt_config.model.channels)
        trainer = Trainer.resume(out, source, dev)
    else:
        cfg = resolve_config(preset, config)
        train_overrides = {k: v for k, v in {"lr": lr, "optimizer": optimizer, "seed": seed}.items() if v is not None}
        cfg = configs.replace(cfg, train=train_overrides, model={"lcn": False} if no_lcn else {})
        if runs.checkpoint_path(out).is_file():
            raise UserError(f"--out {out}: already holds a run (use --resume, or another --out)")
        source = open_source(data, cfg.model.input_size, cfg.model.channels)
        trainer = Trainer(cfg, source, out, dev, data_spec=data)
    runner, how = trainer, ""
    if replicas < 1:
        raise UserError(f"--replicas {replicas}: must be at least 1")
    if replicas > 1 or address is not None:
        from catneuron.train.downpour import Downpour, DownpourOptions

        if on_replica_failure not in ("replace", "continue"):
            raise UserError(f"--on-replica-failure {on_replica_failure}: choose replace or continue")
        runner = Downpour(trainer, DownpourOptions(replicas, ps_shards, fetch_every, push_every, address,
                                                   on_replica_failure == "replace", ps_snapshot_minutes * 60))
        how = f" with Downpour SGD ({replicas} replicas, {ps_shards} parameter shards)"
    elif (ps_shards, fetch_every, push_every) != (1, 1, 1):
        raise UserError("--ps-shards, --fetch-every and --push-every need --replicas > 1 or --address")
    if watch or watch_negatives:
        trainer.watch = make_watch(watch, watch_negatives, trainer.config, WatchOptions(
            watch_every, watch_minutes * 60 if watch_minutes is not None else None, watch_budget), watch_images)
    print(f"training {trainer.config.preset} on {source.description} into {out}{how}")
    result = runner.fit(steps, max_seconds=minutes * 60 if minutes else None)
    print(f"step {result.step}: checkpoint {runs.checkpoint_path(out)}")
