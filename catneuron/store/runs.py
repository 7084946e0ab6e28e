"""The run folder: where a training run keeps its config, checkpoint, metrics and results.

    RUN/config.json             the full config and the data it was trained on
    RUN/checkpoint.safetensors  weights, optimizer state, RNG (see catneuron.store.checkpoint)
    RUN/metrics.jsonl           one JSON object per logged training step, and the `--watch` records
    RUN/checkpoint-best.safetensors  with `--watch`: the weights at the watch's best trained point
    RUN/provenance.json         per training session: versions, git commit, device, command line
    RUN/events.out.tfevents.*   the metrics rows for TensorBoard
    RUN/results/                analysis outputs: <concept>.json from `evaluate`, CSVs
    RUN/figures/                PNG pictures
    RUN/report/                 the HTML report
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from catneuron.errors import UserError
from catneuron.model import budget
from catneuron.model.network import Network
from catneuron.store import checkpoint, files

CHECKPOINT = "checkpoint.safetensors"
BEST_CHECKPOINT = "checkpoint-best.safetensors"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


def checkpoint_path(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT


def results_dir(run: str | Path) -> Path:
    path = Path(run) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(run: str | Path) -> Path:
    path = Path(run) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def chosen_checkpoint(run: str | Path, choice: str | Path = "last") -> Path:
    """`--checkpoint`: "last" (the run's checkpoint), "best" (the watch's best trained point), or a path."""
    run = Path(run)
    if str(choice) == "last":
        return checkpoint_path(run)
    if str(choice) == "best":
        path = run / BEST_CHECKPOINT
        if not path.is_file():
            raise UserError(f"--checkpoint best: {run} has no {BEST_CHECKPOINT} (it is written by `train --watch`)")
        return path
    path = Path(choice)
    if not path.is_file():
        raise UserError(f"--checkpoint {choice}: no such file (best, last, or the path of a checkpoint)")
    return path


def load_network(run: str | Path, device: str | torch.device = "cpu", choice: str | Path = "last"
                 ) -> tuple[Network, checkpoint.Checkpoint]:
    """The trained network of a run (eval mode) from the checkpoint `choice` names (`chosen_checkpoint`), and
    its checkpoint record."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    path = chosen_checkpoint(run, choice)
    budget.check_fits(budget.weight_bytes(checkpoint.read_config(path).model), f"the network of {run}")
    ckpt = checkpoint.load(path)
    net = Network(ckpt.config.model)
    checkpoint.load_weights(net, ckpt.model, path)
    return net.to(device).eval(), ckpt


def training_data(run: str | Path) -> str:
    """The `--data` a run was trained on, as its config.json records it (absolute: see `absolute_spec`)."""
    path = Path(run) / CONFIG
    try:
        data = json.loads(path.read_text()).get("data")
    except (OSError, json.JSONDecodeError, AttributeError):
        raise UserError(f"{path}: cannot read the run's config (give --data)") from None
    if not isinstance(data, str) or not data:
        raise UserError(f"{path}: records no training data (give --data)")
    return data


def number(value: object) -> float | None:
    """A finite JSON number, or None for anything else (missing keys, strings, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_metrics(run: str | Path) -> list[dict]:
    """The training steps' rows (not the records a `--watch` adds, which carry a "record" kind)."""
    return [row for row in read_rows(run) if "record" not in row]


def read_rows(run: str | Path) -> list[dict]:
    """Every row of metrics.jsonl, training steps and `--watch` records alike."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(run: str | Path, step: int) -> None:
    """Drop the rows logged after `step` (a resumed run redoes those steps: each step is logged once); rows
    that belong to no step (`--watch` baselines) stay."""
    path = Path(run) / METRICS
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and (not isinstance(row.get("step"), int) or row["step"] <= step):
            keep.append(line if line.endswith("\n") else line + "\n")
    if keep != lines:
        files.write_atomic(path, "".join(keep))


def device(name: str) -> torch.device:
    """`--device`: cpu, cuda, cuda:N or auto (cuda when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (cpu, cuda, cuda:N, auto)") from None
