"""The `small` preset's training rate as `catneuron train --data embedded` runs it, quiet and beside a busy process.

Each case runs in a fresh process: the trainer (data made a batch ahead, Adagrad, weight normalization)
for `--steps` steps after `--warmup`, at 1 and 2 threads, with OpenMP's idle threads sleeping (PASSIVE, what
`import catneuron` sets unless the user set OMP_WAIT_POLICY) and spinning (ACTIVE, libgomp's default for a
while); then the same beside a busy process (one core spinning in pure Python, as another user's job).
Each case runs on the compiled CPU kernels and on the bmm sweeps (`--products`). Prints images/s, CPU time per
step, the slowdown beside the busy process, and the dense float32 matmul rate sampled in the same run (quiet and
busy), so that load from other jobs shows.

    python benchmarks/small_step.py [--steps 40] [--threads 1 2] [--policies PASSIVE ACTIVE]
                                    [--products compiled sweeps]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from machine import busy_process, dense_gflops, in_fresh_process


def one(steps: int, warmup: int, products: str) -> dict:
    """This process's rate: `warmup` steps, then `steps` timed ones, the layer's products on `products`."""
    import torch

    from catneuron.data.sources import open_source
    from catneuron.model import local_cpp
    from catneuron.model.config import preset
    from catneuron.train.trainer import Trainer

    if products == "sweeps":
        local_cpp.available = lambda: False
    config = preset("small")
    source = open_source("embedded", config.model.input_size, config.model.channels)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, source, run, data_spec="embedded")
        trainer.fit(warmup, progress=False)
        start, cpu = time.perf_counter(), time.process_time()
        trainer.fit(warmup + steps, progress=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"images_per_s": steps * config.train.batch_size / seconds, "cpu_ms": cpu / steps * 1000,
            "threads": torch.get_num_threads()}


def in_subprocess(what: str, threads: int, policy: str, steps: int, warmup: int) -> dict:
    """`what`: "dense", or the products to train on ("compiled", "sweeps")."""
    return in_fresh_process(__file__, [what, str(steps), str(warmup)],
                            {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": policy})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--policies", nargs="+", default=["PASSIVE", "ACTIVE"], choices=["PASSIVE", "ACTIVE"])
    parser.add_argument("--products", nargs="+", default=["compiled", "sweeps"], choices=["compiled", "sweeps"])
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        what, steps, warmup = args.one
        result = {"gflops": dense_gflops()} if what == "dense" else one(int(steps), int(warmup), what)
        print(json.dumps(result))
        return
    from catneuron.store.rates import processor_name

    print(f"small preset, batch 100, embedded corpus; {processor_name()}, load average {os.getloadavg()[0]:.1f}")
    dense = {"quiet": in_subprocess("dense", 2, "PASSIVE", 0, 0)["gflops"]}
    with busy_process():
        dense["busy"] = in_subprocess("dense", 2, "PASSIVE", 0, 0)["gflops"]
    print(f"dense float32 matmul 2048^3, 2 threads: {dense['quiet']:.0f} GFLOP/s quiet, {dense['busy']:.0f} beside "
          f"the busy process: {dense['quiet'] / dense['busy']:.1f}x slower")
    print(f"{'products':>8s} {'threads':>7s} {'OpenMP wait':>11s} {'quiet img/s':>11s} {'cpu ms/step':>11s} "
          f"{'busy img/s':>10s} {'cpu ms/step':>11s} {'slowdown':>8s}")
    for products in args.products:
        for threads in args.threads:
            for policy in args.policies:
                quiet = in_subprocess(products, threads, policy, args.steps, args.warmup)
                with busy_process():
                    busy = in_subprocess(products, threads, policy, args.steps, args.warmup)
                case = f"{products:>8s} {threads:7d} {policy:>11s}"
                if "error" in quiet or "error" in busy:
                    print(f"{case} failed: {quiet.get('error') or busy.get('error')}")
                    continue
                print(f"{case} {quiet['images_per_s']:11.0f} {quiet['cpu_ms']:11.1f} {busy['images_per_s']:10.0f} "
                      f"{busy['cpu_ms']:11.1f} {quiet['images_per_s'] / busy['images_per_s']:7.1f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
