"""One full training step of the `paper` preset (~0.94e9 parameters, batch 100) on this machine.

Prints seconds per step, the FLOP rate (training FLOPs per image as `catneuron info` counts them),
the machine's dense float32 matmul rate measured in the same run, and peak memory (max RSS).

    python benchmarks/paper_step.py [--steps 1] [--batch 100]
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


def dense_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    return 6 * n**3 / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    config = PRESETS["paper"]
    dense = dense_gflops()
    print(f"dense float32 matmul: {dense:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    start = time.perf_counter()
    network = Network(config.model)
    optimizer = make_optimizer(config, network.parameters())
    params = sum(p.numel() for p in network.parameters())
    print(f"paper preset: {params:,} parameters, built in {time.perf_counter() - start:.1f} s")
    images = torch.rand(args.batch, config.model.channels, config.model.input_size, config.model.input_size)
    train_flops = args.batch * training_flops(config.model)
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        outputs = network(images)
        network.loss(outputs).backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"step {step}: {seconds:.1f} s, {train_flops / seconds / 1e9:.1f} GFLOP/s "
              f"({train_flops / seconds / 1e9 / dense:.1%} of dense), {args.batch / seconds:.1f} images/s, "
              f"peak memory {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
