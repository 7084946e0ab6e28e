"""Where a rank computes, and the process group that follows from it: the one place CPU and CUDA ranks differ.

A rank computes on the CPU, its group talking gloo, or on a GPU of its own, its group talking NCCL: local
rank i on cuda:i of the GPUs its process sees (a Ray actor sees only the GPU Ray gave it: cuda:0). NCCL
cannot put two ranks of one communicator on one GPU, so a machine's ranks must not outnumber its GPUs.
Everything else in catneuron.parallel is device-generic: tensors made for a collective are made on
`group_device()`, which is the CPU under gloo, so the CPU tests run the same lines.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from catneuron.errors import UserError

CPU = torch.device("cpu")


def backend(device: torch.device) -> str:
    """The process group's backend for ranks computing on `device`: NCCL for CUDA, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def check_gpus(device: torch.device, ranks: int, grid: tuple[int, int]) -> None:
    """Refuse, in one line, what NCCL cannot do: `ranks` ranks on this machine with fewer GPUs visible, or one
    GPU named for all of them (each rank takes its own)."""
    if device.type != "cuda":
        return
    flags = f"--partitions {grid[0]}x{grid[1]} --device {device}"
    if device.index is not None:
        raise UserError(f"{flags}: each rank takes its own GPU (local rank i on cuda:i): give --device cuda, "
                        f"and CUDA_VISIBLE_DEVICES to choose the GPUs")
    visible = torch.cuda.device_count()
    if ranks > visible:
        raise UserError(f"{flags}: {ranks} ranks on this machine need {ranks} GPUs (one per rank: NCCL cannot "
                        f"share a GPU between ranks), {visible} visible")


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device local rank `local_rank` computes on, for ranks asked to compute on `device`'s kind."""
    return torch.device("cuda", local_rank) if device.type == "cuda" else CPU


def gpus_per_rank(device: torch.device) -> int:
    """GPUs a rank (a Ray actor) asks Ray for: one of its own on CUDA, which it then sees as cuda:0."""
    return 1 if device.type == "cuda" else 0


def init_group(device: torch.device, rank: int, world: int, store: dist.Store | None, timeout: timedelta) -> None:
    """Bind this process to `device` (NCCL needs torch.cuda.set_device before its first call) and join the
    process group with the backend `device` needs (`store` None: env://, as torchrun sets it up)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device), store=store, rank=rank, world_size=world, timeout=timeout)


def group_device() -> torch.device:
    """The device the process group's collectives take their tensors on: this process's GPU under NCCL, else
    the CPU. A rank computes there too."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return CPU


def for_group(t: Tensor) -> Tensor:
    """`t` on the process group's device (itself when it is there already), ready for a collective."""
    return t.to(group_device())
