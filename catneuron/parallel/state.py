"""Weights and optimizer state between the whole network's layout and the ranks' blocks.

A rank starts from the whole state (a fresh seeded `Network`, or the checkpoint file) and keeps its
block of every parameter; the checkpoint is written from the blocks gathered on rank 0, so it is the
single-process format and any grid (or the single-process trainer) can resume it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from catneuron.parallel.network import BlockNetwork, block_of, place_block

GATHER_TAG = 1 << 20


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
    """The whole (positions, ...) tensor on rank 0 from every rank's block of it; None elsewhere."""
    world = net.grid[0] * net.grid[1]
    if net.rank != 0:
        dist.send(local.detach().contiguous(), 0, tag=tag)
        return None
    grid = net.param_block(name, 0)[0]
    whole = local.new_empty(grid[0] * grid[1], *local.shape[1:])
    place_block(whole, local.detach(), *net.param_block(name, 0))
    for q in range(1, world):
        _, rows, cols = net.param_block(name, q)
        buf = local.new_empty((rows[1] - rows[0]) * (cols[1] - cols[0]), *local.shape[1:])
        dist.recv(buf, q, tag=tag)
        place_block(whole, buf, *net.param_block(name, q))
    return whole


def gather_model(net: BlockNetwork) -> dict[str, Tensor] | None:
    """Network.state_dict() of the whole model on rank 0 (None on the others)."""
    state = {name: _gather(p, net, name, GATHER_TAG + i) for i, (name, p) in enumerate(net.named_parameters())}
    return state if net.rank == 0 else None


def gather_gradients(net: BlockNetwork) -> dict[str, Tensor] | None:
    """The whole model's parameter gradients on rank 0 (None on the others)."""
    grads = {name: _gather(p.grad, net, name, GATHER_TAG + i) for i, (name, p) in enumerate(net.named_parameters())}
    return grads if net.rank == 0 else None


def gather_optimizer(net: BlockNetwork, optimizer: torch.optim.Optimizer) -> dict | None:
    """The whole optimizer's state_dict() on rank 0: per-position state gathered, the rest (step counts) rank 0's."""
    params = list(net.named_parameters())
    local = optimizer.state_dict()
    state = {}
    for index in sorted(local["state"]):
        name, p = params[index]
        state[index] = {}
        for k, v in sorted(local["state"][index].items()):
            per_position = torch.is_tensor(v) and v.shape == p.shape
            state[index][k] = _gather(v, net, name, GATHER_TAG + 1000 + index) if per_position else v
    return {"state": state, "param_groups": local["param_groups"]} if net.rank == 0 else None
