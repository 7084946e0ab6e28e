"""One full training step of the `paper` preset (~0.94e9 parameters, batch 100) on this machine.

Prints seconds per step, the FLOP rate (training FLOPs per image as `catneuron info` counts them),
the device's dense float32 matmul rate measured in the same run, and peak memory (max RSS on CPU,
the CUDA allocator's peak on a GPU, where the layer runs catneuron.model.triton_local's kernels).

    python benchmarks/paper_step.py [--steps 1] [--batch 100] [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from catneuron.model.budget import training_flops
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.train.trainer import make_optimizer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dense_gflops(device: torch.device) -> float:
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    synchronize(device)
    return 6 * n**3 / (time.perf_counter() - start) / 1e9


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = PRESETS["paper"]
    dense = dense_gflops(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"dense float32 matmul: {dense:.1f} GFLOP/s ({where})")
    start = time.perf_counter()
    network = Network(config.model).to(device)
    optimizer = make_optimizer(config, network.parameters())
    params = sum(p.numel() for p in network.parameters())
    print(f"paper preset: {params:,} parameters, built in {time.perf_counter() - start:.1f} s")
    images = torch.rand(args.batch, config.model.channels, config.model.input_size, config.model.input_size,
                        device=device)
    train_flops = args.batch * training_flops(config.model)
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        outputs = network(images)
        network.loss(outputs).backward()
        optimizer.step()
        synchronize(device)
        seconds = time.perf_counter() - start
        print(f"step {step}: {seconds:.2f} s, {train_flops / seconds / 1e9:.1f} GFLOP/s "
              f"({train_flops / seconds / 1e9 / dense:.1%} of dense), {args.batch / seconds:.1f} images/s, "
              f"peak memory {peak_gb(device):.1f} GB")


if __name__ == "__main__":
    main()
