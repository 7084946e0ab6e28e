"""Parameter-server shards for Downpour SGD: each holds a slice of every parameter tensor and its optimizer state.

Every tensor is cut along its first dimension (positions, for the locally connected weights) into K
near-equal row ranges, and shard k holds range k of every tensor: the shards are balanced to a row
whatever the model, and a filter's weights (one position's rows) never straddle two shards, so the
weight-norm projection runs inside a shard. A shard keeps its rows as one flat tensor and applies
`make_optimizer(config, [flat])`: Adagrad and SGD work element by element, so this is the very update
the single-process trainer makes, value for value.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import load_file, safe_open
from torch import nn

from catneuron.model.config import Config
from catneuron.model.stage import Stage
from catneuron.store.checkpoint import save_tensors
from catneuron.store.files import atomic
from catneuron.train.trainer import make_optimizer


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of parameter `param` (index in `network.parameters()`), at `offset` in a shard's flat."""

    param: int
    name: str
    start: int
    stop: int
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


def named_shapes(network: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in network.named_parameters()]


def layout(shapes: list[tuple[str, tuple[int, ...]]], shards: int) -> list[list[Piece]]:
    """Which rows of which tensor (named shapes, in `parameters()` order) each of `shards` shards holds."""
    pieces: list[list[Piece]] = [[] for _ in range(shards)]
    offsets = [0] * shards
    for index, (name, whole) in enumerate(shapes):
        bounds = np.linspace(0, whole[0], shards + 1).round().astype(int)
        for k in range(shards):
            shape = (int(bounds[k + 1] - bounds[k]), *whole[1:])
            piece = Piece(index, name, int(bounds[k]), int(bounds[k + 1]), shape, offsets[k])
            pieces[k].append(piece)
            offsets[k] += piece.numel
    return pieces


def shard_size(pieces: list[Piece]) -> int:
    return sum(p.numel for p in pieces)


def gather(tensors: Sequence[torch.Tensor], pieces: list[Piece]) -> np.ndarray:
    """One shard's rows of full-size tensors (weights, gradients, optimizer sums; on any device), as its flat
    array: shards hold their rows in CPU memory."""
    return np.concatenate([tensors[p.param].detach()[p.start:p.stop].reshape(-1).cpu().numpy() for p in pieces])


def scatter(flat: np.ndarray, pieces: list[Piece], tensors: Sequence[torch.Tensor]) -> None:
    """Write one shard's flat array into its rows of full-size tensors (in place, on whatever device they are)."""
    with warnings.catch_warnings():  # a fetched array is read-only (Ray's object store): it is only read here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        for p in pieces:
            rows = torch.from_numpy(flat[p.offset:p.offset + p.numel].reshape(p.shape))
            tensors[p.param].detach()[p.start:p.stop].copy_(rows)


class RowShards:
    """K shards over the whole network's tensors: shard k holds rows range k of every tensor, and every
    replica talks to every shard (a replica in one process)."""

    def __init__(self, network: nn.Module, shards: int) -> None:
        self.pieces = layout(named_shapes(network), shards)

    def gather(self, tensors: Sequence[torch.Tensor], k: int) -> np.ndarray:
        """Shard k's rows of the whole network's tensors (weights, gradients, optimizer sums), as its flat array."""
        return gather(tensors, self.pieces[k])

    def scatter(self, flat: np.ndarray, k: int, tensors: Sequence[torch.Tensor]) -> None:
        """Write shard k's flat array into its rows of the whole network's tensors."""
        scatter(flat, self.pieces[k], tensors)

    def of_rank(self, rank: int) -> list[int]:
        """The shards a replica's (only) rank fetches from and pushes to: all of them."""
        return list(range(len(self.pieces)))


class ParameterShard:
    """A Ray actor (created with max_restarts): applies pushed gradients, serves fetches, snapshots itself.

    `load` gives a new shard its rows and writes a first snapshot at once, so a shard always has one:
    when Ray restarts a dead shard (this constructor again, same arguments) it comes back with the state
    of its last snapshot, and the pushes after it are lost, as a dead machine's would be. The
    constructor's arguments stay small, so Ray has nothing large to keep for restarts.
    """

    def __init__(self, config: Config, pieces: list[Piece], snapshot_path: str, snapshot_seconds: float) -> None:
        torch.set_num_threads(1)
        self.config, self.pieces = config, pieces
        self.snapshot_path, self.snapshot_seconds = Path(snapshot_path), snapshot_seconds
        self.restored_from: int | None = None  # the version of the snapshot this shard came back from
        if self.snapshot_path.is_file():
            tensors = load_file(str(self.snapshot_path))
            with safe_open(str(self.snapshot_path), framework="pt") as f:
                self.restored_from = int(f.metadata()["version"])
            state = {k[len("optim."):]: v.numpy() for k, v in tensors.items() if k.startswith("optim.")}
            self._set(tensors["param"].numpy(), state, self.restored_from)

    def load(self, param: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """The initial rows and optimizer state (from the trainer), snapshotted before any push."""
        self._set(param, state, 0)
        self.snapshot()

    def _set(self, param: np.ndarray, state: dict[str, np.ndarray], version: int) -> None:
        self.version = version
        self.param = torch.tensor(param)
        self.optimizer = make_optimizer(self.config, [self.param])
        self.optimizer.state[self.param] = {k: torch.tensor(v) for k, v in state.items()}
        self.grad = torch.zeros_like(self.param)
        self.stages = self._stage_views()
        self.last_snapshot = time.monotonic()

    def _stage_views(self) -> list[SimpleNamespace]:
        """This shard's rows of each stage's encoder and decoder, shaped so Stage.normalize_weights applies."""
        stages: dict[str, SimpleNamespace] = {}
        for p in self.pieces:
            prefix, module, _ = p.name.rsplit(".", 2)
            view = self.param[p.offset:p.offset + p.numel].view(p.shape)
            setattr(stages.setdefault(prefix, SimpleNamespace()), module, SimpleNamespace(weight=view))
        return list(stages.values())

    def progress(self) -> tuple[int, int | None, str]:
        """(pushes applied, the snapshot version this shard was restored from, its node's address): the driver's
        probe for restarts."""
        import ray

        return self.version, self.restored_from, ray.util.get_node_ip_address()

    def fetch(self) -> tuple[int, np.ndarray]:
        """(version, rows): Ray copies the array out when the call returns, before any later push runs."""
        return self.version, self.param.numpy()

    def push(self, grad: np.ndarray, fetched_version: int) -> int:
        """Apply one replica's accumulated gradient; returns its staleness (versions behind at push)."""
        np.copyto(self.grad.numpy(), grad)
        self.param.grad = self.grad
        self.optimizer.step()
        self.param.grad = None
        if self.config.model.weight_norm != "none":
            for stage in self.stages:
                Stage.normalize_weights(stage, self.config.model.weight_norm)  # type: ignore[arg-type]  # its views
        staleness = max(0, self.version - fetched_version)
        self.version += 1
        if time.monotonic() - self.last_snapshot >= self.snapshot_seconds:
            self.snapshot()
        return staleness

    def snapshot(self) -> None:
        tensors = {"param": self.param} | {f"optim.{k}": v for k, v in self.optimizer.state[self.param].items()}
        with atomic(self.snapshot_path) as tmp:
            save_tensors(tensors, tmp, {"version": str(self.version)})
        self.last_snapshot = time.monotonic()

    def state(self) -> dict:
        """Everything a checkpoint needs from this shard, and whether it was restored from a snapshot."""
        return {"version": self.version, "restored_from": self.restored_from, "param": self.param.numpy(),
                "optim": {k: v.numpy() for k, v in self.optimizer.state[self.param].items()}}


def snapshot_name(index: int, shards: int) -> str:
    return f"shard-{index}-of-{shards}.safetensors"
