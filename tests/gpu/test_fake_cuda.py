"""The fake-CUDA tier: every CUDA code path executed on fake tensors, in one fresh process started with the fake
device (catneuron.model.fake_cuda; tests/gpu/fake_paths.py runs the paths and reports what it saw)."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from catneuron.model import fake_cuda

pytestmark = pytest.mark.slow  # one process for the whole tier: about 20 s, and the shim's compilation once

PRESETS = ("tiny", "small", "paper")
PRECISIONS = ("float32", "bf16")


@pytest.fixture(scope="module")
def seen() -> dict:
    if shutil.which("g++") is None or importlib.util.find_spec("triton") is None:
        pytest.skip("the fake CUDA device needs g++ and triton")
    done = fake_cuda.run([str(Path(__file__).with_name("fake_paths.py"))], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("preset", PRESETS)
def test_a_training_step_runs_on_cuda_with_the_cpu_paths_dtypes(seen, preset, precision):
    step, cpu = seen["train"][f"cuda/{preset}/{precision}"], seen["train"][f"cpu/tiny/{precision}"]
    assert step["dtypes"] == cpu["dtypes"]  # bf16 operands: activations stay float32 (were bfloat16 on CUDA)
    assert set(step["dtypes"].values()) == {"torch.float32"}
    assert step["off_device"] == []  # every parameter and gradient on cuda (the network was built on the CPU)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_training_step_waits_on_the_gpu_once(seen, preset):
    assert seen["train"][f"cuda/{preset}/float32"]["syncs"] == ["aten._to_copy.default"]  # was 6 float() reads


def test_adagrad_on_cuda_is_chosen_single_tensor(seen):
    assert seen["train"]["cuda/paper/float32"]["foreach"] is False  # torch chose foreach: 17.6 GiB instead of 12.5


def test_the_checkpoint_copies_the_weights_and_optimizer_to_the_host(seen):
    step = seen["train"]["cuda/paper/float32"]
    assert step["checkpoint_devices"] == ["cpu"] and step["checksum_ran"]


def test_batches_for_cuda_are_pinned(seen):
    assert seen["pinned"] >= 2  # two batches drawn (the prefetch thread may have made a third)


def test_a_downpour_replica_computes_on_its_gpu(seen):
    replica = seen["replica"]
    assert replica["off_device"] == [] and set(replica["dtypes"].values()) == {"torch.float32"}
    assert len(replica["syncs"]) == 1


def test_a_model_parallel_rank_runs_forward_and_backward_on_its_gpu(seen):
    rank = seen["block_rank"]
    assert rank["off_device"] == [] and set(rank["dtypes"].values()) == {"torch.float32"}


def test_evaluation_and_optimal_stimulus_run_on_the_gpu(seen):
    assert seen["analysis"]["activations"] == ["cpu", "torch.float32"]  # brought back to the host for the scans
    assert seen["analysis"]["stimulus_gradient"] == ["cuda:0", "torch.float32", "cuda:0"]


def test_the_products_are_ops_that_tracing_and_the_flop_counter_see_whole(seen):
    products = seen["products"]
    assert products["graph_ops"] == ["catneuron.contract.default", "catneuron.spread.default"]
    assert products["flops"] == 2 * (2 * 36 * 2 * 27 * 4)  # contract and spread: 2 * L * O * P * B each
