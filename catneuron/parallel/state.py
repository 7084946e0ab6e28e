"""Weights and optimizer state between the whole network's layout and the ranks' blocks, without the whole.

A rank never holds the whole model: it draws its blocks of the single-process trainer's initial weights
(`initial_blocks`), reads its rows of a checkpoint (`read_blocks`), and sends its rows to rank 0, which
writes the checkpoint as they arrive (`save_blocks`). The checkpoint is the single-process format, so
any grid (or the single-process trainer) resumes it. `load_blocks` and the `gather_*` functions take and
give whole states, for the checks and the watch, which need the whole network anyway.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch import Tensor

from catneuron.errors import UserError
from catneuron.model.config import Config
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.parallel.device import for_group, group_device
from catneuron.parallel.network import BlockNetwork, block_of, place_block
from catneuron.store import checkpoint, streamed

GATHER_TAG = 1 << 20
DRAW = 1 << 22  # normals drawn at a time: a multiple of 16 (see initial_blocks)
PIECE_BYTES = 1 << 26  # the rows rank 0 assembles at a time while it writes a checkpoint

Span = tuple[int, int]


def position_runs(grid: tuple[int, int], rows: Span, cols: Span) -> list[Span]:
    """A block's positions as runs [a, b) of a (positions, ...) tensor's first axis (positions row-major)."""
    return [(y * grid[1] + cols[0], y * grid[1] + cols[1]) for y in range(*rows)]


def normal_rows(shape: tuple[int, ...], runs: list[Span], std: float, dtype: torch.dtype) -> Tensor:
    """The rows `runs` of `torch.empty(shape).normal_(std=std)`, drawn from the global generator piece by piece
    so that the whole tensor is never held; the generator ends where the whole draw leaves it."""
    per = math.prod(shape[1:])
    total = shape[0] * per
    out = torch.empty(sum(b - a for a, b in runs) * per, dtype=dtype)
    spans, at = [], 0  # (first element in the whole, first element in out, length)
    for a, b in runs:
        spans.append((a * per, at, (b - a) * per))
        at += (b - a) * per
    start, k = 0, 0
    while start < total:
        size = DRAW if total - start - DRAW >= 16 else total - start
        piece = torch.empty(size, dtype=dtype).normal_(std=std)
        end = start + size
        while k < len(spans) and spans[k][0] + spans[k][2] <= start:
            k += 1
        for first, place, length in spans[k:]:
            if first >= end:
                break
            lo, hi = max(first, start), min(first + length, end)
            out[place + lo - first:place + hi - first] = piece[lo - start:hi - start]
        start = end
    return out.view(-1, *shape[1:])


def _whole_shape(net: BlockNetwork, name: str, local: Tensor) -> tuple[int, ...]:
    grid = net.param_block(name, net.rank)[0]
    return (grid[0] * grid[1], *local.shape[1:])


def initial_blocks(net: BlockNetwork, seed: int) -> None:
    """This rank's blocks of the single-process trainer's initial weights: `torch.manual_seed(seed)`, every
    layer's normal draw in the network's order, `normalize_weights`. Each layer is drawn whole but a piece at a
    time, keeping only the block's rows: torch draws normals 16 at a time, so consecutive draws of 16k elements
    (the last at least 16) give the elements one draw of the whole gives (tests/parallel/test_state.py)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            runs = position_runs(*net.param_block(name, net.rank))
            layer = cast(LocallyConnected2d | LocalDecoder, net.get_submodule(name.rsplit(".", 1)[0]))
            p.copy_(normal_rows(_whole_shape(net, name, p), runs, layer.init_std(), p.dtype))
    net.normalize_weights()


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], path: Path,
                    meta: dict) -> dict | None:
    """The optimizer's state from the rows read (`optim.*`) and the file's metadata, loaded into `optimizer`;
    None where the file holds no optimizer state."""
    if "optimizer" not in meta:
        return None
    try:
        state = checkpoint.optimizer_state({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                           checkpoint.read_json(path, meta, "optimizer"))
        optimizer.load_state_dict(state)
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: damaged checkpoint (optimizer state: {e})") from None
    return state


def read_blocks(net: BlockNetwork, optimizer: torch.optim.Optimizer, path: str | Path,
                verify: bool) -> checkpoint.Checkpoint:
    """Take this rank's blocks from a checkpoint file, reading only their rows (`verify`: check the whole
    file's checksum first, in pieces: one rank does). The returned Checkpoint's model and optimizer are the
    blocks; its step, rng and extra are the file's."""
    path = Path(path)
    meta = checkpoint.read_metadata(path)
    if verify:
        streamed.verify(path)
    params = dict(net.named_parameters())
    names = list(params)
    wanted = {f"model.{name}": (name, _whole_shape(net, name, p)) for name, p in params.items()}

    def cut(key: str, shape: tuple[int, ...]) -> list[Span] | None:
        if key in wanted:
            name, whole = wanted[key]
            if shape != whole:
                raise UserError(f"{path}: damaged checkpoint (tensor {key} has shape {shape}; its config needs "
                                f"{whole})")
            return position_runs(*net.param_block(name, net.rank))
        if key.startswith("optim."):
            index = int(key.split(".")[1])
            if index < len(names) and shape == wanted[f"model.{names[index]}"][1]:  # per position: Adagrad's sums
                return position_runs(*net.param_block(names[index], net.rank))
        return None

    # The rows go straight into the parameters and the optimizer's own state (Adagrad's sums exist from its
    # start), where they are in CPU memory: the blocks are held once, not twice.
    into = {f"model.{name}": p.data for name, p in params.items()}
    for index, values in optimizer.state_dict()["state"].items():
        into |= {f"optim.{index}.{key}": v for key, v in values.items()
                 if torch.is_tensor(v) and v.shape == params[names[index]].shape}
    tensors = streamed.read(path, cut, into)
    for key in wanted:
        if key not in tensors:
            raise UserError(f"{path}: damaged checkpoint (tensor {key} is missing)")
    with torch.no_grad():
        for name, p in params.items():
            if tensors[f"model.{name}"] is not into[f"model.{name}"]:  # on a GPU, or of another type
                p.copy_(tensors[f"model.{name}"])
    state = _load_optimizer(optimizer, tensors, path, meta)
    return checkpoint.Checkpoint(config=checkpoint.read_config(path), step=int(meta["step"]),
                                 model={name: p.detach() for name, p in params.items()}, optimizer=state,
                                 rng=tensors.get("rng.torch"), extra=checkpoint.read_json(path, meta, "extra", "{}"))


def _pieces(net: BlockNetwork, name: str, rest: tuple[int, ...], itemsize: int) -> Iterator[tuple[int, Span]]:
    """(row of blocks, rows [y0, y1) of positions) in position order, a few rows at a time: the order in which
    rank 0 assembles and writes a (positions, ...) tensor; every rank derives it from the geometry."""
    grid, _, _ = net.param_block(name, 0)
    per_row = grid[1] * itemsize * math.prod(rest)
    step = max(1, PIECE_BYTES // per_row)
    for i in range(net.grid[0]):
        _, rows, _ = net.param_block(name, i * net.grid[1])
        for y in range(rows[0], rows[1], step):
            yield i, (y, min(y + step, rows[1]))


def _send_rows(local: Tensor, net: BlockNetwork, name: str, tag: int) -> None:
    """A rank's part of `_receive_rows`: its block's rows of each piece in its row of blocks (from wherever
    `local` is: the weights on the rank's device, the optimizer's sums as the checkpoint's CPU copy)."""
    _, rows, cols = net.param_block(name, net.rank)
    width = cols[1] - cols[0]
    for i, (y0, y1) in _pieces(net, name, tuple(local.shape[1:]), local.element_size()):
        if i == net.rank // net.grid[1]:
            dist.send(for_group(local[(y0 - rows[0]) * width:(y1 - rows[0]) * width].detach()).contiguous(), 0,
                      tag=tag)


def _receive_rows(local: Tensor, net: BlockNetwork, name: str, tag: int) -> Iterator[Tensor]:
    """On rank 0: the whole (positions, ...) tensor, rows of positions in order, a piece at a time, in CPU
    memory (each part arrives on the group's device, as its backend needs, and is copied out)."""
    grid = net.param_block(name, 0)[0]
    rest = tuple(local.shape[1:])
    for i, (y0, y1) in _pieces(net, name, rest, local.element_size()):
        band = torch.empty(y1 - y0, grid[1], *rest, dtype=local.dtype)
        for j in range(net.grid[1]):
            q = i * net.grid[1] + j
            _, rows, cols = net.param_block(name, q)
            width = cols[1] - cols[0]
            if q == 0:
                part = local[(y0 - rows[0]) * width:(y1 - rows[0]) * width].detach()
            else:
                part = torch.empty((y1 - y0) * width, *rest, dtype=local.dtype, device=group_device())
                dist.recv(part, q, tag=tag)
            band[:, cols[0]:cols[1]] = part.view(y1 - y0, width, *rest)
        yield band


def save_blocks(net: BlockNetwork, optimizer: torch.optim.Optimizer, path: str | Path, config: Config, step: int,
                extra: dict) -> None:
    """Write the replica's checkpoint (the single-process format) from every rank's blocks: rank 0 writes
    each tensor as its rows arrive, so it holds a few rows of one tensor beyond its own blocks. Every rank
    calls it; only rank 0 writes."""
    params = dict(net.named_parameters())
    names = list(params)
    opt_tensors, opt_meta = checkpoint.optimizer_tensors(optimizer.state_dict())
    tensors = {f"model.{name}": p.detach() for name, p in params.items()} | opt_tensors
    owner = {f"model.{name}": name for name in names}  # tensors laid out by positions: each rank holds rows
    owner |= {key: names[int(key.split(".")[1])] for key, t in opt_tensors.items()
              if t.shape == params[names[int(key.split(".")[1])]].shape}
    order = sorted(tensors)
    if net.rank != 0:
        for tag, key in enumerate(order):
            if key in owner:
                _send_rows(tensors[key], net, owner[key], GATHER_TAG + tag)
        return
    entries = []
    for tag, key in enumerate(order):
        t = tensors[key]
        if key in owner:
            entries.append(streamed.Entry(key, t.dtype, _whole_shape(net, owner[key], t),
                                          functools.partial(_receive_rows, t, net, owner[key], GATHER_TAG + tag)))
        else:  # a step count: rank 0's, as every rank's
            entries.append(streamed.Entry(key, t.dtype, tuple(t.shape), functools.partial(iter, [t])))
    rng = torch.get_rng_state()
    entries.append(streamed.Entry("rng.torch", rng.dtype, tuple(rng.shape), functools.partial(iter, [rng])))
    streamed.write(path, checkpoint.metadata(config, step, extra, opt_meta), entries)


def load_blocks(net: BlockNetwork, optimizer: torch.optim.Optimizer, model: dict[str, Tensor],
                optim: dict | None) -> None:
    """Take this rank's blocks of a whole state (Network.state_dict() and its optimizer's state_dict())."""
    names = [name for name, _ in net.named_parameters()]
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(block_of(model[name], *net.param_block(name, net.rank)))
    if optim is None:
        return
    state = {}
    for index, values in optim["state"].items():
        name = names[int(index)]
        whole = model[name].shape
        state[int(index)] = {k: block_of(v, *net.param_block(name, net.rank)) if torch.is_tensor(v) and v.shape == whole
                             else v for k, v in values.items()}
    optimizer.load_state_dict({"state": state, "param_groups": optim["param_groups"]})


def _gather(local: Tensor, net: BlockNetwork, name: str, tag: int) -> Tensor | None:
    """The whole (positions, ...) tensor on rank 0, in CPU memory, from every rank's block of it (each block
    arrives on the group's device); None elsewhere."""
    world = net.grid[0] * net.grid[1]
    if net.rank != 0:
        dist.send(for_group(local.detach()).contiguous(), 0, tag=tag)
        return None
    grid = net.param_block(name, 0)[0]
    whole = torch.empty(grid[0] * grid[1], *local.shape[1:], dtype=local.dtype)
    place_block(whole, local.detach(), *net.param_block(name, 0))
    for q in range(1, world):
        _, rows, cols = net.param_block(name, q)
        buf = torch.empty((rows[1] - rows[0]) * (cols[1] - cols[0]), *local.shape[1:], dtype=local.dtype,
                          device=group_device())
        dist.recv(buf, q, tag=tag)
        place_block(whole, buf, *net.param_block(name, q))
    return whole


def gather_model(net: BlockNetwork) -> dict[str, Tensor] | None:
    """Network.state_dict() of the whole model on rank 0, in CPU memory (None on the others)."""
    state = {name: _gather(p, net, name, GATHER_TAG + i) for i, (name, p) in enumerate(net.named_parameters())}
    return cast(dict[str, Tensor], state) if net.rank == 0 else None  # rank 0's gathers are all tensors


def gather_gradients(net: BlockNetwork) -> dict[str, Tensor] | None:
    """The whole model's parameter gradients on rank 0, in CPU memory (None on the others)."""
    grads = {name: _gather(cast(Tensor, p.grad), net, name, GATHER_TAG + i)
             for i, (name, p) in enumerate(net.named_parameters())}
    return cast(dict[str, Tensor], grads) if net.rank == 0 else None  # rank 0's gathers are all tensors
