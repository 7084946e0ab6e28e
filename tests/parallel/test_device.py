"""Where ranks compute and how their group talks (catneuron.parallel.device): the CPU and gloo, or a GPU per rank
and NCCL; the refusal of more ranks than GPUs. No GPU here: torch.cuda's counts are set by monkeypatch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from catneuron.errors import UserError
from catneuron.parallel import device
from catneuron.parallel.device import backend, check_gpus, for_group, gpus_per_rank, group_device, rank_device
from catneuron.parallel.launch import TIMEOUT

CUDA = torch.device("cuda")


def test_cpu_ranks_talk_gloo_and_gpu_ranks_nccl():
    assert backend(torch.device("cpu")) == "gloo"
    assert backend(CUDA) == "nccl"
    assert backend(torch.device("cuda", 3)) == "nccl"


def test_local_rank_i_computes_on_cuda_i_or_on_the_cpu():
    assert [rank_device(CUDA, i) for i in range(3)] == [torch.device("cuda", i) for i in range(3)]
    assert {rank_device(torch.device("cpu"), i) for i in range(3)} == {torch.device("cpu")}


def test_a_rank_on_cuda_asks_ray_for_one_gpu():
    assert gpus_per_rank(CUDA) == 1
    assert gpus_per_rank(torch.device("cpu")) == 0


def test_more_ranks_than_visible_gpus_are_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_gpus(CUDA, 2, (1, 2))
    with pytest.raises(UserError) as e:
        check_gpus(CUDA, 4, (2, 2))
    assert str(e.value) == ("--partitions 2x2 --device cuda: 4 ranks on this machine need 4 GPUs (one per rank: NCCL "
                            "cannot share a GPU between ranks), 2 visible")
    check_gpus(torch.device("cpu"), 4, (2, 2))  # CPU ranks need no GPU


def test_one_gpu_named_for_every_rank_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    with pytest.raises(UserError, match=r"^--partitions 1x2 --device cuda:1: each rank takes its own GPU"):
        check_gpus(torch.device("cuda", 1), 2, (1, 2))


@pytest.fixture
def gloo_group(tmp_path, monkeypatch):
    """A process group of this process alone, as a CPU rank joins one."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    device.init_group(torch.device("cpu"), 0, 1, dist.FileStore(str(tmp_path / "store"), 1), TIMEOUT)
    yield
    dist.destroy_process_group()


def test_collectives_take_cpu_tensors_under_gloo(gloo_group):
    assert group_device() == torch.device("cpu")
    t = torch.arange(3.0)
    assert for_group(t) is t  # already there: no copy
    dist.all_reduce(for_group(t))


def test_collectives_take_the_ranks_gpu_under_nccl(gloo_group, monkeypatch):
    """Under NCCL the group's device is the one torch.cuda.set_device bound the process to (init_group)."""
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert group_device() == torch.device("cuda", 1)


def test_a_gpu_rank_binds_its_gpu_before_it_joins_an_nccl_group(monkeypatch):
    """NCCL needs torch.cuda.set_device before the group's first call; a CPU rank binds nothing and talks gloo."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw["rank"])))
    device.init_group(torch.device("cuda", 1), 1, 2, None, TIMEOUT)
    device.init_group(torch.device("cpu"), 0, 2, None, TIMEOUT)
    assert calls == [("set_device", torch.device("cuda", 1)), ("nccl", 1), ("gloo", 0)]
