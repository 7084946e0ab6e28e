"""Checkpoints: one safetensors file holding weights, optimizer state and RNG, with JSON metadata.

One file means one atomic rename: a checkpoint is either the old one or the new one, never half
of each. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from catneuron.errors import UserError
from catneuron.model.config import Config, from_dict, to_dict

FORMAT = "catneuron-checkpoint/2"  # 2: filter fan-in ordered (row, column, channel)


@dataclass
class Checkpoint:
    config: Config
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict | None
    rng: torch.Tensor | None
    extra: dict
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def _optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(path: str | Path, config: Config, step: int, model: torch.nn.Module | dict[str, torch.Tensor],
         optimizer: torch.optim.Optimizer | dict | None = None, extra: dict | None = None,
         extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over `path`.

    `extra_tensors`: further named tensors that belong with the weights (e.g. a classifier on top), kept
    apart from `model.*` so that loading the network ignores them. `model` and `optimizer` may be given as
    their state dicts (a model-parallel replica gathers its blocks into them).
    """
    path = Path(path)
    model_state = model if isinstance(model, dict) else model.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    tensors |= {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
    meta = {"format": FORMAT, "config": json.dumps(to_dict(config)), "step": str(step),
            "extra": json.dumps(extra or {})}
    if optimizer is not None:
        opt_tensors, opt_meta = _optimizer_tensors(optimizer if isinstance(optimizer, dict) else optimizer.state_dict())
        tensors |= opt_tensors
        meta["optimizer"] = json.dumps(opt_meta)
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint there")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
    if meta.get("format") == "catneuron-checkpoint/1":
        raise UserError(f"{path}: written by catneuron before 0.2, whose filters ordered their fan-in "
                        "(channel, row, column); train it again with this version")
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a catneuron checkpoint (format {meta.get('format')!r})")
    return meta


def read_config(path: str | Path) -> Config:
    """The config of a checkpoint, read from its header alone (no weights loaded)."""
    return from_dict(json.loads(_metadata(Path(path))["config"]), source=str(path))


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    meta = _metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    optimizer = _optimizer_state(optim, json.loads(meta["optimizer"])) if "optimizer" in meta else None
    return Checkpoint(config=from_dict(json.loads(meta["config"]), source=str(path)), step=int(meta["step"]),
                      model=model, optimizer=optimizer, rng=tensors.get("rng.torch"),
                      extra=json.loads(meta.get("extra", "{}")),
                      extra_tensors={k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")})
