"""Every CUDA code path on fake tensors, in a process started with the fake device (catneuron.model.fake_cuda):
prints one JSON object that tests/gpu/test_fake_cuda.py checks. Numerics stay with the interpreter and CPU tests."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from catneuron.data.sources import ArraySource
from catneuron.downpour.replica import Replica
from catneuron.model import fake_cuda
from catneuron.model.config import PRESETS
from catneuron.model.network import NeuronId
from catneuron.model.stage import SUBLAYERS
from catneuron.store import checkpoint
from catneuron.train.trainer import Trainer

CUDA = torch.device("cuda")


def config(preset: str, precision: str):
    cfg = PRESETS[preset]
    return replace(cfg, train=replace(cfg.train, precision=precision))


def source(cfg, n: int = 2) -> ArraySource:
    m = cfg.model
    return ArraySource(np.random.default_rng(0).random((n, m.channels, m.input_size, m.input_size), np.float32),
                       "random images")


def dtypes(outputs) -> dict[str, str]:
    """Every activation's and objective term's dtype, by stage and name."""
    return {f"{i}.{name}": str(getattr(out, name).dtype) for i, out in enumerate(outputs, start=1)
            for name in (*SUBLAYERS, "reconstruction", "sparsity")}


def devices(network: torch.nn.Module) -> list[str]:
    """The parameters and gradients that are not on CUDA (none, where all is right)."""
    return [f"{name}{suffix}" for name, p in network.named_parameters()
            for suffix, t in (("", p), (".grad", p.grad)) if t is None or t.device.type != "cuda"]


def train_step(preset: str, precision: str, device: torch.device, run: str, fake: bool = True) -> dict:
    """One training step; on CUDA on fake tensors, or (`fake` False: a real GPU) on real ones, syncs counted alike."""
    cfg = config(preset, precision)
    start = time.monotonic()
    on_cuda = fake_cuda.fake_device() if fake else fake_cuda.SyncCounter()
    with on_cuda if device.type == "cuda" else contextlib.nullcontext() as counter:
        trainer = Trainer(cfg, source(cfg), run, device)
        images = torch.rand(cfg.train.batch_size, cfg.model.channels, cfg.model.input_size, cfg.model.input_size)
        before = len(counter.syncs) if counter else 0
        trainer.train_step(images)
        syncs = counter.syncs[before:] if counter else []
        with torch.no_grad():
            outputs = trainer.network(images.to(device))
        row = {"dtypes": dtypes(outputs), "off_device": devices(trainer.network), "syncs": syncs,
               "foreach": trainer.optimizer.defaults.get("foreach"), "seconds": time.monotonic() - start}
        if device.type == "cuda":
            tensors = {f"model.{k}": v.detach().cpu() for k, v in trainer.network.state_dict().items()}
            row["checkpoint_devices"] = sorted({str(t.device) for t in tensors.values()})
            row["checksum_ran"] = bool(checkpoint.optimizer_tensors(trainer.optimizer.state_dict())[0])
    return row


def pinned_batches(run: str) -> int:
    """How many of the trainer's batches for CUDA were page-locked (pin_memory counted: the fake device's pinned
    memory is ordinary memory)."""
    calls = []
    pin = torch.Tensor.pin_memory

    def counted(self, *args, **kwargs):
        calls.append(1)
        return pin(self, *args, **kwargs)

    cfg = PRESETS["tiny"]
    torch.Tensor.pin_memory = counted
    try:
        with fake_cuda.fake_device():
            trainer = Trainer(cfg, source(cfg, 40), run, CUDA)
        batches = trainer.batches()
        for _ in range(2):
            next(batches)
        batches.close()
    finally:
        torch.Tensor.pin_memory = pin
    return len(calls)


def replica_step() -> dict:
    """A Downpour replica's step on its GPU: network built there, batch copied, terms read, gradients computed."""
    cfg = PRESETS["tiny"]
    with fake_cuda.fake_device() as counter:
        replica = Replica(cfg, source(cfg, 40), 0, 1, 0, [], [], 1, 1, 1, CUDA)
        outputs = replica.network(next(replica.batches).to(replica.device))
        loss = replica.network.loss(outputs)
        replica._terms(outputs)
        loss.backward()
        return {"dtypes": dtypes(outputs), "off_device": devices(replica.network), "syncs": counter.syncs}


def block_rank() -> dict:
    """Rank 0 of a 1x2 model-parallel replica, forward and backward on its GPU: the halo exchange's and the sums'
    tensors on the device. torch's fake process group stands in for NCCL (its collectives move no data)."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from catneuron.parallel.network import BlockNetwork

    m = PRESETS["tiny"].model
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        with fake_cuda.fake_device(), CUDA:
            network = BlockNetwork(m, (1, 2), 0)
            outputs = network(torch.rand(4, m.channels, m.input_size, m.input_size, device=CUDA))
            network.loss(outputs).backward()
            return {"dtypes": dtypes(outputs), "off_device": devices(network)}
    finally:
        dist.destroy_process_group()


def analysis() -> dict:
    """The evaluation's activation pass and the optimal stimulus's gradient on the GPU (its ascent's bookkeeping, on
    data-dependent shapes, cannot run on fake tensors)."""
    from catneuron.analysis.activations import unit_activations
    from catneuron.analysis.optimal import _value_and_grad, neuron_objective, project, random_starts
    from catneuron.model.network import Network

    cfg = PRESETS["tiny"]
    m = cfg.model
    with fake_cuda.fake_device(), CUDA:
        network = Network(m)
        images = np.random.default_rng(0).random((3, m.channels, m.input_size, m.input_size), np.float32)
        acts = next(unit_activations(network, images))
        network.requires_grad_(False)
        x = project(random_starts(2, (m.channels, m.input_size, m.input_size), 0, torch.float32).to(CUDA))
        value, grad = _value_and_grad(neuron_objective(network, NeuronId(1, "pool", 0, 0, 0)), x)
        return {"activations": [str(acts.device), str(acts.dtype)],
                "stimulus_gradient": [str(grad.device), str(grad.dtype), str(value.device)]}


def real() -> None:
    """`--real`, on a GPU (benchmarks/gpu_check.sh): the training steps for real, to compare with the fake ones."""
    out: dict = {"train": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "bf16"):
            for preset in ("tiny", "small"):
                out["train"][f"cuda/{preset}/{precision}"] = train_step(preset, precision, CUDA, tmp + "/g", False)
    json.dump(out, sys.stdout)


def traced_products() -> dict:
    """The products as torch.library ops: traced whole (make_fx over fake tensors, as torch.compile's AOT step does),
    and counted by FlopCounterMode through their formulas."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils.flop_counter import FlopCounterMode

    from catneuron.model import triton_local
    from catneuron.model.local_reference import TILE_BYTES, Geometry

    geo = Geometry(8, 8, 3, 3, 1, 4, TILE_BYTES, 4)

    def layer(image, weight):
        return triton_local.spread(triton_local.contract(image, weight, geo), weight, geo)

    with fake_cuda.fake_device():
        image, weight = torch.rand(8, 8, 3, 4, device=CUDA), torch.rand(36, 2, 27, device=CUDA)
        graph = make_fx(layer, tracing_mode="fake")(image, weight)
        with FlopCounterMode(display=False) as flops:
            layer(image, weight)
    return {"graph_ops": sorted({str(n.target) for n in graph.graph.nodes if n.op == "call_function"}),
            "flops": flops.get_total_flops()}


def main() -> None:
    if sys.argv[1:] == ["--real"]:
        return real()
    assert fake_cuda.active(), "started without the fake device (catneuron.model.fake_cuda.environment())"
    out: dict = {"train": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "bf16"):
            out["train"][f"cpu/tiny/{precision}"] = train_step("tiny", precision, torch.device("cpu"), tmp + "/c")
            for preset in ("tiny", "small", "paper"):
                out["train"][f"cuda/{preset}/{precision}"] = train_step(preset, precision, CUDA, tmp + "/g")
        out["pinned"] = pinned_batches(tmp + "/p")
    out["replica"] = replica_step()
    out["block_rank"] = block_rank()
    out["analysis"] = analysis()
    out["products"] = traced_products()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
