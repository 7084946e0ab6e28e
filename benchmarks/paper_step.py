"""Full training steps of a preset (default `paper`: ~0.94e9 parameters, batch 100) on this machine.

Prints seconds per step, the FLOP rate (training FLOPs per image as `catneuron info` counts them),
the device's dense float32 matmul rate measured in the same run, the CPU time of each step (user and
system: page faults for fresh memory show as system time), peak memory (max RSS on CPU, the
CUDA allocator's peak on a GPU, where the layer runs catneuron.model.triton_local's kernels) and the
processor, and records the rate (images/s, mean over the steps after the first when there are
several) in catneuron.store.rates' file, from which `catneuron info` estimates a run's time.

On the CPU, `--products sweeps` runs the layer's products on the bmm sweeps instead of the compiled kernels
(`compiled sweeps` runs both in turn on the same network, after the same first step).

    python benchmarks/paper_step.py [--preset paper] [--steps 1] [--batch 100] [--precision float32]
                                    [--device cuda] [--products compiled [sweeps]]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from datetime import date

import torch
from machine import dense_gflops, synchronize

from catneuron.model import gpu_plan, local_cpp
from catneuron.model.budget import training_flops
from catneuron.model.config import PRECISIONS, PRESETS
from catneuron.model.network import Network
from catneuron.store import rates
from catneuron.train.trainer import make_optimizer


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    parser.add_argument("--products", nargs="+", default=["compiled"], choices=["compiled", "sweeps"],
                        help="on the CPU: the compiled kernels, the bmm sweeps, or both in turn")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = PRESETS[args.preset]
    processor = torch.cuda.get_device_name(device) if device.type == "cuda" else rates.processor_name()
    dense = dense_gflops(device, repeats=3)
    print(f"dense float32 matmul: {dense:.1f} GFLOP/s ({torch.get_num_threads()} threads, {processor}, "
          f"load average {os.getloadavg()[0]:.1f})")
    start = time.perf_counter()
    with device:  # built where it trains, as the trainer builds it
        network = Network(config.model)
    network.set_precision(args.precision)
    optimizer = make_optimizer(config, network.parameters())
    params = sum(p.numel() for p in network.parameters())
    print(f"{args.preset} preset: {params:,} parameters, built in {time.perf_counter() - start:.1f} s")
    images = torch.rand(args.batch, config.model.channels, config.model.input_size, config.model.input_size,
                        device=device)
    train_flops = args.batch * training_flops(config.model)
    seconds = []
    compiled = local_cpp.available
    runs = [products for products in args.products for _ in range(args.steps)]
    for step, products in enumerate(runs, start=1):
        local_cpp.available = compiled if products == "compiled" else lambda: False
        start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        optimizer.zero_grad(set_to_none=True)
        outputs = network(images)
        network.loss(outputs).backward()
        optimizer.step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        if len(runs) <= 20 or step % 10 == 0 or step == len(runs):
            print(f"step {step} ({products}): {seconds[-1]:.3f} s, {train_flops / seconds[-1] / 1e9:.1f} GFLOP/s "
                  f"({train_flops / seconds[-1] / 1e9 / dense:.1%} of dense), {args.batch / seconds[-1]:.1f} images/s, "
                  f"peak memory {peak_gb(device):.2f} GB, cpu {after.ru_utime - cpu.ru_utime:.1f} s user + "
                  f"{after.ru_stime - cpu.ru_stime:.1f} s system")
    timed = seconds[1:args.steps] or seconds[:1]  # the first products' steps, after the first
    images_per_s = args.batch * len(timed) / sum(timed)
    rate = rates.Rate(args.preset, images_per_s, args.batch, len(timed), torch.get_num_threads(), processor,
                      args.precision, date.today().isoformat())
    dense_after = dense_gflops(device, repeats=3)
    mfu = gpu_plan.utilisation(images_per_s, training_flops(config.model), device, args.precision)
    if mfu is not None:
        print(f"MFU {mfu:.1f}% of the {processor}'s dense {args.precision} peak; peak memory {peak_gb(device):.2f} GB "
              f"(the plan on fake tensors: catneuron info --preset {args.preset} --device cuda)")
    print(f"{args.preset}: {images_per_s:.1f} images/s ({args.precision}) over {len(timed)} step(s); "
          f"dense matmul {dense:.0f} then {dense_after:.0f} GFLOP/s; recorded in {rates.record(rate)}")


if __name__ == "__main__":
    main()
