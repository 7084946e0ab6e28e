"""Which rank a process is and where it computes when torchrun started it on one node of several: its global rank
(RANK) for the process group and for who reports, its rank on the node (LOCAL_RANK) for its GPU. No GPU here:
torch.cuda's count is set by monkeypatch, and joining the group is recorded instead of done."""

from __future__ import annotations

import errno
import os

import pytest
import torch
import torch.distributed as dist

from catneuron.model.config import PRESETS
from catneuron.parallel import launch
from catneuron.parallel.launch import ranks_here, run_this_rank, torchrun_rank
from catneuron.parallel.trainer import ModelParallel

CUDA = torch.device("cuda")


@pytest.fixture
def second_node(monkeypatch):
    """The environment torchrun gives the one worker of the second node of `--nnodes 2 --nproc-per-node 1`."""
    for name, value in {"TORCHELASTIC_RUN_ID": "run", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                        "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # each node has one GPU


def test_the_second_nodes_rank_joins_as_rank_1_on_its_nodes_first_gpu(second_node, monkeypatch):
    joined = []
    monkeypatch.setattr(launch, "init_group", lambda device, rank, world, store, timeout: joined.append(
        (device, rank, world, store)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # not this test process's threads
    assert torchrun_rank() == (1, 2) and ranks_here(2) == 1
    assert run_this_rank(lambda rank, world: (rank, world), 2, device=CUDA) == (1, 2)
    assert joined == [(torch.device("cuda", 0), 1, 2, None)]  # env://, as torchrun set it up


def test_one_gpu_per_node_is_enough_and_only_rank_0_reports(second_node, tmp_path):
    """`--partitions 1x2 --device cuda` over two nodes of one GPU each: not refused (one rank per node), and the
    second node's process, though first on its node, is not the one that reports."""
    runner = ModelParallel(PRESETS["tiny"], "embedded", tmp_path / "run", (1, 2), 1, False, device=CUDA)
    assert not runner.leader


def _disk_full(rank: int, world: int) -> None:
    if rank == 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "run/checkpoint.safetensors")


@pytest.mark.slow
def test_a_ranks_os_error_is_the_launchers_as_in_one_process():
    """Disk full while rank 0 writes the checkpoint: the launcher raises the OSError (exit 1, as a single process
    does), not a rank failure (exit 2, which says bad input)."""
    with pytest.raises(OSError) as raised:
        launch.run_ranks(_disk_full, 2)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "run/checkpoint.safetensors"
