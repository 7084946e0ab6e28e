"""Model and training configuration: presets, YAML files, validation, and sizes computed without allocating."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from catneuron.errors import UserError
from catneuron.model.local_reference import output_size


@dataclass(frozen=True)
class StageConfig:
    """One stage: untied filtering (maps, kernel, stride), L2 pooling (pool, pool_stride), LCN (lcn_size)."""

    maps: int = 8
    kernel: int = 18
    stride: int = 1
    pool: int = 5
    pool_stride: int = 1
    lcn_size: int = 5


@dataclass(frozen=True)
class ModelConfig:
    """The network. `detach_stages`: each stage's objective trains only its own weights (see docs/model.md).
    `encoder`: "linear" (the paper's) or "sigmoid" (the deep-autoencoder baseline)."""

    input_size: int = 32
    channels: int = 1
    stages: tuple[StageConfig, ...] = (StageConfig(),) * 3
    sparsity: float = 0.1
    eps: float = 1e-2
    lcn: bool = True
    detach_stages: bool = True
    weight_norm: str = "none"
    encoder: str = "linear"


@dataclass(frozen=True)
class TrainConfig:
    """Optimization: minibatches of 100 and Adagrad are the paper's (DistBelief) defaults. `precision`: the
    locally connected products' operands, "float32", "bf16" (bfloat16 operands accumulated in float32) or "tf32"
    (float32 operands multiplied as TF32 on CUDA's tensor cores; float32 elsewhere)."""

    batch_size: int = 100
    optimizer: str = "adagrad"
    lr: float = 0.05
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    precision: str = "float32"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "custom"


# Larger inputs are no longer images of this model's kind (the paper's are 200): refused before any arithmetic.
MAX_INPUT_SIZE = 2048
OPTIMIZERS = ("adagrad", "sgd")
PRECISIONS = ("float32", "bf16", "tf32")
WEIGHT_NORMS = ("none", "encoder", "both")
# "linear" is the paper's TICA filtering; "sigmoid" codes sigmoid(W1^T x) make the stages the
# locally connected deep (sigmoid) autoencoder the paper compares against.
ENCODERS = ("linear", "sigmoid")

PRESETS: dict[str, Config] = {
    # A step in a few milliseconds: for tests.
    "tiny": Config(
        preset="tiny",
        model=ModelConfig(input_size=16, channels=1, stages=(
            StageConfig(maps=4, kernel=5, stride=1, pool=3, lcn_size=3),
            StageConfig(maps=4, kernel=3, stride=1, pool=3, lcn_size=3),
            StageConfig(maps=4, kernel=3, stride=1, pool=2, lcn_size=3),
        )),
        train=TrainConfig(batch_size=20, checkpoint_every=50, log_every=5),
    ),
    # The demo's model: 32x32 grey, minutes on a 2-core CPU.
    "small": Config(
        preset="small",
        model=ModelConfig(input_size=32, channels=1, stages=(
            StageConfig(maps=8, kernel=8, stride=1, pool=3, lcn_size=5),
            StageConfig(maps=8, kernel=6, stride=2, pool=3, lcn_size=5),
            StageConfig(maps=8, kernel=4, stride=1, pool=3, lcn_size=3),
        )),
    ),
    # The paper's network: 200x200 colour, 18x18 windows, 8 maps, 5x5 pooling. The paper gives no
    # strides; filter strides 1/2/1 with pooling stride 1 give 0.94e9 trainable parameters (W1 and W2
    # of the three stages), the paper's "1 billion".
    "paper": Config(
        preset="paper",
        model=ModelConfig(input_size=200, channels=3, stages=(
            StageConfig(maps=8, kernel=18, stride=1, pool=5, lcn_size=5),
            StageConfig(maps=8, kernel=18, stride=2, pool=5, lcn_size=5),
            StageConfig(maps=8, kernel=18, stride=1, pool=5, lcn_size=5),
        )),
    ),
}


@dataclass(frozen=True)
class StageShape:
    """Sizes of one stage, derived from the config alone."""

    index: int
    in_channels: int
    in_size: int
    filter_size: int
    pool_size: int
    maps: int
    kernel: int

    @property
    def positions(self) -> int:
        return self.filter_size**2

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel**2

    @property
    def parameters(self) -> int:
        """W1 and W2 (untied); pooling and LCN have none."""
        return 2 * self.positions * self.maps * self.fan_in


def stage_shapes(model: ModelConfig) -> list[StageShape]:
    shapes, channels, size = [], model.channels, model.input_size
    for i, s in enumerate(model.stages, start=1):
        filt = output_size(size, s.kernel, s.stride)
        pooled = output_size(filt, s.pool, s.pool_stride)
        shapes.append(StageShape(i, channels, size, filt, pooled, s.maps, s.kernel))
        channels, size = s.maps, pooled
    return shapes


def validate(config: Config, source: str = "config") -> Config:
    """Raise UserError naming the offending field if the config cannot make a network."""
    _check_numbers(config, source)
    _check_choices(config, source)
    _check_stages(config.model, source)
    return config


def _check_numbers(config: Config, source: str) -> None:
    m, t = config.model, config.train
    if m.channels not in (1, 3):
        raise UserError(f"{source}: model.channels must be 1 (grey) or 3 (colour), got {m.channels}")
    if not m.stages:
        raise UserError(f"{source}: model.stages is empty")
    positive = {"model.input_size": m.input_size, "model.eps": m.eps, "train.batch_size": t.batch_size,
                "train.lr": t.lr, "train.checkpoint_every": t.checkpoint_every, "train.log_every": t.log_every}
    for name, value in positive.items():
        if not (value > 0 and math.isfinite(value)):  # refuses NaN, which compares false with everything
            raise UserError(f"{source}: {name} must be a positive number, got {value}")
    if m.input_size > MAX_INPUT_SIZE:
        raise UserError(f"{source}: model.input_size {m.input_size} is larger than {MAX_INPUT_SIZE} "
                        "(the paper's is 200)")
    if not (m.sparsity >= 0 and math.isfinite(m.sparsity)):
        raise UserError(f"{source}: model.sparsity must be >= 0, got {m.sparsity}")
    if t.seed < 0:
        raise UserError(f"{source}: train.seed must be >= 0, got {t.seed}")


def _check_choices(config: Config, source: str) -> None:
    m, t = config.model, config.train
    choices = {"train.optimizer": (t.optimizer, OPTIMIZERS), "train.precision": (t.precision, PRECISIONS),
               "model.weight_norm": (m.weight_norm, WEIGHT_NORMS), "model.encoder": (m.encoder, ENCODERS)}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise UserError(f"{source}: {name} must be one of {', '.join(allowed)}, got {value!r}")


def _check_stages(m: ModelConfig, source: str) -> None:
    """Each stage's sizes positive, and its windows fitting the maps the stage below gives it."""
    size = m.input_size
    for i, s in enumerate(m.stages, start=1):
        for name in ("maps", "kernel", "stride", "pool", "pool_stride", "lcn_size"):
            if getattr(s, name) <= 0:
                raise UserError(f"{source}: stage {i} {name} must be positive, got {getattr(s, name)}")
        if s.lcn_size % 2 == 0:
            raise UserError(f"{source}: stage {i} lcn_size must be odd, got {s.lcn_size}")
        if s.kernel > size:
            raise UserError(f"{source}: stage {i} kernel {s.kernel} exceeds its input size {size}")
        filt = output_size(size, s.kernel, s.stride)
        if s.pool > filt:
            raise UserError(f"{source}: stage {i} pool {s.pool} exceeds its filter output size {filt}")
        size = output_size(filt, s.pool, s.pool_stride)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if name == "stages":
            if not isinstance(value, list):
                raise UserError(f"{where}.stages must be a list of stage mappings")
            value = tuple(_build(StageConfig, s, f"{where}.stages[{i}]") for i, s in enumerate(value))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{where}.{name} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{where}.{name} must be a number, got {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise UserError(f"{where}.{name} must be an integer, got {value!r}")
            value = type(default)(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise UserError(f"{where}.{name} must be a string, got {value!r}")
        values[name] = value
    return cls(**values)


def from_dict(data: dict, source: str = "config") -> Config:
    """A config from a mapping: `preset` (optional base), `model` and `train` sections overriding it."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping at the top level")
    unknown = sorted(set(data) - {"preset", "model", "train"})
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r} (known: preset, model, train)")
    base = preset(data.get("preset", "small"))
    model = dataclasses.asdict(base.model) | data.get("model", {})
    model["stages"] = [dataclasses.asdict(s) if isinstance(s, StageConfig) else s for s in model["stages"]]
    train = dataclasses.asdict(base.train) | data.get("train", {})
    config = Config(model=_build(ModelConfig, model, f"{source}: model"),
                    train=_build(TrainConfig, train, f"{source}: train"),
                    preset=data.get("preset", base.preset))
    return validate(config, source)


def to_dict(config: Config) -> dict:
    data = dataclasses.asdict(config)
    data["model"]["stages"] = [dict(s) for s in data["model"]["stages"]]
    return data


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"--preset: unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def load(path: str | Path) -> Config:
    """Read a YAML (or JSON) config file; every problem is a one-line UserError naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UserError(f"--config {path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return from_dict(data if data is not None else {}, source=str(path))


def _assign(data: dict, text: str) -> None:
    """One `--set FIELD=VALUE` into the config's mapping: FIELD is section.name, stages[i].name for a stage
    (from 0), VALUE a YAML scalar or flow value (0.2, true, adagrad, [..])."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text}: give FIELD=VALUE, e.g. model.sparsity=0.2 or train.lr=0.01")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise UserError(f"--set {text}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    parts = key.strip().split(".")
    if parts[0] not in ("model", "train") or len(parts) < 2:
        raise UserError(f"--set {text}: FIELD must start with model. or train. (e.g. model.sparsity, "
                        "model.stages[0].maps, train.lr)")
    node: dict = data[parts[0]]
    for part in parts[1:-1]:
        name, bracket, index = part.partition("[")
        if name != "stages" or not bracket or not index.endswith("]") or not index[:-1].isdigit():
            raise UserError(f"--set {text}: {part!r} is not a section; stage fields are model.stages[i].name")
        if int(index[:-1]) >= len(node["stages"]):
            raise UserError(f"--set {text}: the config has stages[0] to stages[{len(node['stages']) - 1}]")
        node = node["stages"][int(index[:-1])]
    node[parts[-1]] = value


def with_sets(config: Config, assignments: list[str]) -> Config:
    """The config with `--set FIELD=VALUE` overrides, each checked as the YAML file's fields are (unknown
    fields, types, bounds), the message naming --set."""
    if not assignments:
        return config
    data = to_dict(config)
    for text in assignments:
        _assign(data, text)
    source = f"--set {' '.join(assignments)}"
    return validate(Config(model=_build(ModelConfig, data["model"], f"{source}: model"),
                           train=_build(TrainConfig, data["train"], f"{source}: train"), preset=config.preset), source)


def replace(config: Config, **sections: dict) -> Config:
    """A copy with some fields of `model` / `train` replaced, validated."""
    model = dataclasses.replace(config.model, **sections.get("model", {}))
    train = dataclasses.replace(config.train, **sections.get("train", {}))
    return validate(dataclasses.replace(config, model=model, train=train))
