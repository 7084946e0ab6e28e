"""Checkpoints: one safetensors file holding weights, optimizer state and RNG, with JSON metadata.

One file means one atomic rename: a checkpoint is either the old one or the new one, never half
of each. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from catneuron.errors import UserError
from catneuron.model.config import Config, from_dict, to_dict
from catneuron.store.files import atomic

FORMAT = "catneuron-checkpoint/2"  # 2: filter fan-in ordered (row, column, channel)
CHECK_ELEMENTS = 1 << 22  # elements non_finite checks at a time (16 MB of float32)


@dataclass
class Checkpoint:
    config: Config
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict | None
    rng: torch.Tensor | None
    extra: dict
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """CRC-32 of every tensor's name, dtype, shape and bytes, in name order: a flipped byte changes it."""
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        crc = zlib.crc32(describe(name, t.dtype, tuple(t.shape)), crc)
        crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), crc)  # type: ignore[arg-type]  # a buffer
    return f"crc32:{crc:08x}"


def describe(name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> bytes:
    """What the checksum adds before a tensor's bytes (store.streamed computes the same checksum in pieces)."""
    return f"{name}|{dtype}|{tuple(shape)}".encode()


def optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict() as a checkpoint holds it: tensors named optim.<index>.<key>, and the rest
    (param_groups, scalars) for the metadata."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
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
    opt_meta = None
    if optimizer is not None:
        opt_tensors, opt_meta = optimizer_tensors(optimizer if isinstance(optimizer, dict) else optimizer.state_dict())
        tensors |= opt_tensors
    meta = metadata(config, step, extra, opt_meta)
    tensors["rng.torch"] = torch.get_rng_state()
    meta["checksum"] = checksum(tensors)
    with atomic(path) as tmp:
        save_tensors(tensors, tmp, meta)


def metadata(config: Config, step: int, extra: dict | None, optimizer: dict | None) -> dict[str, str]:
    """A checkpoint's header metadata, less its checksum (`optimizer`: its param_groups and scalars)."""
    meta = {"format": FORMAT, "config": json.dumps(to_dict(config)), "step": str(step),
            "extra": json.dumps(extra or {})}
    if optimizer is not None:
        meta["optimizer"] = json.dumps(optimizer)
    return meta


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' save_file, its I/O failures (disk full) raised as the OSError they are."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)|code: (\d+)", str(e))
        if code:
            errno = int(code.group(1) or code.group(2))
            raise OSError(errno, os.strerror(errno), str(path)) from None
        raise OSError(f"{path}: cannot write ({e})") from None


def read_metadata(path: Path) -> dict[str, str]:
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
    for key in ("config", "step"):
        if key not in meta:
            raise UserError(f"{path}: damaged checkpoint (its metadata has no {key!r})")
    if not re.fullmatch(r"\d+", meta["step"]):
        raise UserError(f"{path}: damaged checkpoint (step {meta['step'][:40]!r} is not a count of steps)")
    return meta


def read_json(path: Path, meta: dict[str, str], key: str, default: str | None = None) -> dict:
    """One JSON field of the metadata, which must hold a mapping."""
    try:
        value = json.loads(meta.get(key, default) if default is not None else meta[key])
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: damaged checkpoint (its {key} metadata is not valid JSON: {e.msg} "
                        f"at character {e.pos})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: damaged checkpoint (its {key} metadata is not a mapping)")
    return value


def read_config(path: str | Path) -> Config:
    """The config of a checkpoint, read from its header alone (no weights loaded)."""
    path = Path(path)
    return from_dict(read_json(path, read_metadata(path), "config"), source=str(path))


def read_extra(path: str | Path) -> dict:
    """The extra metadata of a checkpoint (the data it was trained on, ...), from its header alone."""
    path = Path(path)
    return read_json(path, read_metadata(path), "extra", "{}")


def load(path: str | Path) -> Checkpoint:
    path = Path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
    if "checksum" in meta and checksum(tensors) != meta["checksum"]:  # checkpoints before 0.3 have none
        raise UserError(f"{path}: damaged checkpoint (its tensors do not match the checksum written with them)")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    optimizer = None
    if "optimizer" in meta:
        try:
            optimizer = optimizer_state(optim, read_json(path, meta, "optimizer"))
        except (KeyError, ValueError, AttributeError) as e:
            raise UserError(f"{path}: damaged checkpoint (optimizer state: {e})") from None
    return Checkpoint(config=from_dict(read_json(path, meta, "config"), source=str(path)), step=int(meta["step"]),
                      model=model, optimizer=optimizer, rng=tensors.get("rng.torch"),
                      extra=read_json(path, meta, "extra", "{}"),
                      extra_tensors={k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")})


def load_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a checkpoint's weights into the module its config builds, saying which tensor does not fit: its
    shape, its dtype, or a value that is not finite (checked on every load, for evaluation and resume alike)."""
    expected = module.state_dict()
    for name in sorted(set(expected) | set(weights)):
        if name not in weights:
            raise UserError(f"{path}: damaged checkpoint (tensor model.{name} is missing)")
        if name not in expected:
            raise UserError(f"{path}: damaged checkpoint (tensor model.{name} is not part of its model)")
        if weights[name].shape != expected[name].shape:
            raise UserError(f"{path}: damaged checkpoint (tensor model.{name} has shape "
                            f"{tuple(weights[name].shape)}; its config needs {tuple(expected[name].shape)})")
        if weights[name].dtype != expected[name].dtype:  # load_state_dict would cast it without a word
            raise UserError(f"{path}: damaged checkpoint (tensor model.{name} is {_dtype(weights[name])}; the "
                            f"network uses {_dtype(expected[name])})")
    bad = non_finite(weights)
    if bad is not None:
        raise UserError(f"{path}: the network's weights are not finite (NaN or infinity in model.{bad}), as a "
                        "diverged run leaves them; nothing can be measured or trained on them")
    module.load_state_dict(weights)


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first tensor holding NaN or infinity, or None when all are finite. Checked CHECK_ELEMENTS
    at a time: `isfinite` of a whole tensor allocates 1.7x the tensor (its absolute values, then masks), which for
    the `paper` model's largest weights would be the largest allocation of a checkpoint's save."""
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not all(bool(torch.isfinite(piece).all())
                                             for piece in t.detach().reshape(-1).split(CHECK_ELEMENTS)):
            return name
    return None
