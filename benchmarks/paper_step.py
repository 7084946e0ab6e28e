"""Full training steps of a preset (default `paper`: ~0.94e9 parameters, batch 100) on this machine.

Prints seconds per step, the FLOP rate (training FLOPs per image as `catneuron info` counts them),
the machine's dense float32 matmul rate measured in the same run, peak memory (max RSS) and the
processor, and records the rate (images/s, mean over the steps after the first when there are
several) in catneuron.store.rates' file, from which `catneuron info` estimates a run's time.

    python benchmarks/paper_step.py [--preset paper] [--steps 1] [--batch 100] [--precision float32]
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import date

import torch

from catneuron.model.budget import training_flops
from catneuron.model.config import PRECISIONS, PRESETS
from catneuron.model.network import Network
from catneuron.store import rates
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
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    args = parser.parse_args()
    config = PRESETS[args.preset]
    dense = dense_gflops()
    print(f"dense float32 matmul: {dense:.1f} GFLOP/s ({torch.get_num_threads()} threads, {rates.processor_name()})")
    start = time.perf_counter()
    network = Network(config.model)
    network.set_precision(args.precision)
    optimizer = make_optimizer(config, network.parameters())
    params = sum(p.numel() for p in network.parameters())
    print(f"{args.preset} preset: {params:,} parameters, built in {time.perf_counter() - start:.1f} s")
    images = torch.rand(args.batch, config.model.channels, config.model.input_size, config.model.input_size)
    train_flops = args.batch * training_flops(config.model)
    seconds = []
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        outputs = network(images)
        network.loss(outputs).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if args.steps <= 20 or step % 10 == 0 or step == args.steps:
            print(f"step {step}: {seconds[-1]:.3f} s, {train_flops / seconds[-1] / 1e9:.1f} GFLOP/s "
                  f"({train_flops / seconds[-1] / 1e9 / dense:.1%} of dense), {args.batch / seconds[-1]:.1f} images/s, "
                  f"peak memory {peak_gb:.2f} GB")
    timed = seconds[1:] or seconds
    images_per_s = args.batch * len(timed) / sum(timed)
    rate = rates.Rate(args.preset, images_per_s, args.batch, len(timed), torch.get_num_threads(),
                      rates.processor_name(), args.precision, date.today().isoformat())
    dense_after = dense_gflops()
    print(f"{args.preset}: {images_per_s:.1f} images/s ({args.precision}) over {len(timed)} step(s); "
          f"dense matmul {dense:.0f} then {dense_after:.0f} GFLOP/s; recorded in {rates.record(rate)}")


if __name__ == "__main__":
    main()
