"""Model parallelism: what a rank holds and exchanges per step, from the geometry and measured.

1. From the geometry alone (no allocation), per rank per training step of a batch: halo bytes received,
   parameter bytes held (W1 and W2; Adagrad doubles it), and activation bytes (the forward tensors kept for
   backward), for the `paper` preset on 1x1, 2x2, 4x4 and 13x13 blocks (the paper's 169 machines).
2. Measured on spawned ranks (gloo, loopback), for each preset of --presets: 1x1 (the single-process
   network with --threads threads, in a process of its own), then 1x2 and 2x2 with one thread per rank:
   halo bytes received per step (counted at the receives), peak memory (max RSS) per rank, seconds per
   step, and the share of it a rank spends in the exchanges (posting and waiting for its halos, the sigma
   all-reduce: waits for slower peers included).
3. Throughput from the same runs: 1x1 against 1x2, by wall time and by CPU time (the machine's load from
   other jobs changes the first, hardly the second), with the dense float32 matmul rate sampled before them.

    python benchmarks/model_parallel.py [--presets small,paper] [--steps 20] [--paper-steps 2] [--batch 100]
                                        [--grids 1x1,1x2,2x2]

Run it under `flock /tmp/catneuron-heavy.lock` on a shared machine: `paper` at 1x1 takes 12 GB.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time

import torch
import torch.distributed as dist
from machine import dense_gflops

from catneuron.model.config import PRESETS, ModelConfig, stage_shapes
from catneuron.model.network import Network
from catneuron.parallel import halo as halo_module
from catneuron.parallel.grid import parse_grid, plan
from catneuron.parallel.halo import Exchange
from catneuron.parallel.launch import run_ranks
from catneuron.parallel.network import BlockNetwork
from catneuron.parallel.state import initial_blocks
from catneuron.store.rates import processor_name
from catneuron.train.trainer import make_optimizer

FLOAT = 4  # bytes


def area(blocks) -> int:
    return sum(math.prod(b.shape) for _, b in blocks)


def geometry_row(model: ModelConfig, grid: tuple[int, int], batch: int) -> dict:
    """Per rank, the largest over ranks: halo bytes received per step, parameter and activation bytes.

    Received per step with `detach_stages` (the default): filtering: the input halo (forward), the
    neighbours' reconstruction paint over the block (forward) and the paint's gradient (backward);
    pooling: the filter halo and its gradient; LCN: two halos, forward only (its output feeds the next
    stage detached and no objective term).
    """
    world = grid[0] * grid[1]
    halo, params, acts = [0] * world, [0] * world, [0] * world
    for shape, stage in zip(stage_shapes(model), plan(model, grid), strict=True):
        c, maps = shape.in_channels, shape.maps
        for r in range(world):
            f = Exchange.plan(stage.input, stage.filtering.regions(), r, 0)
            p = Exchange.plan(stage.filter, stage.pooling.regions(), r, 0)
            halo[r] += c * (2 * area(f.receives) + area(f.sends)) + maps * (area(p.receives) + area(p.sends))
            if stage.norm is not None:
                n = Exchange.plan(stage.pool, stage.norm.regions(), r, 0)
                halo[r] += 2 * maps * area(n.receives)
            filt, pool = stage.filter.block(r), stage.pool.block(r)
            params[r] += 2 * math.prod(filt.shape) * maps * shape.fan_in
            # input region and its reconstruction, filter block and its pooling region, pooled, v, output
            acts[r] += 2 * c * math.prod(f.region.shape) + maps * (math.prod(filt.shape) + math.prod(
                p.region.shape) + 3 * math.prod(pool.shape))
    return {"grid": f"{grid[0]}x{grid[1]}", "halo": max(halo) * batch * FLOAT, "params": max(params) * FLOAT,
            "acts": max(acts) * batch * FLOAT}


def gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _images(model: ModelConfig, batch: int) -> torch.Tensor:
    return torch.rand(batch, model.channels, model.input_size, model.input_size,
                      generator=torch.Generator().manual_seed(1))


def cpu_seconds() -> float:
    """User and system CPU time of this process so far, all threads: what a step costs whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _train(net, optimizer, images: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        net.loss(net(images)).backward()
        optimizer.step()


def _measure_rank(rank: int, world: int, preset: str, grid: tuple[int, int], steps: int, batch: int) -> list:
    """Train `steps` steps (after one to warm up) on fixed random images; counts the bytes this rank receives
    and the time it spends in exchanges. Per rank: [bytes received / step, max RSS, s / step, exchange s / step,
    CPU s / step]."""
    received, waited = [0], [0.0]
    swap, all_reduce = halo_module._swap, dist.all_reduce

    def counting(sends, receives, tag):
        received[0] += sum(t.numel() * t.element_size() for _, t in receives)
        return swap(sends, receives, tag)

    def timed(fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                waited[0] += time.perf_counter() - start
        return run

    halo_module._swap, dist.all_reduce = timed(counting), timed(all_reduce)
    config = PRESETS[preset]
    net = BlockNetwork(config.model, grid, rank)
    initial_blocks(net, config.train.seed)
    optimizer = make_optimizer(config, net.parameters())
    images = _images(config.model, batch)
    _train(net, optimizer, images, 1)
    dist.barrier()
    received[0], waited[0] = 0, 0.0
    start, cpu = time.perf_counter(), cpu_seconds()
    _train(net, optimizer, images, steps)
    dist.barrier()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    stats = torch.tensor([received[0] / steps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0,
                          seconds / steps, waited[0] / steps, cpu / steps], dtype=torch.float64)
    every = [torch.empty_like(stats) for _ in range(world)]
    dist.all_gather(every, stats)
    return [row.tolist() for row in every] if rank == 0 else None


def _single_rank(rank: int, world: int, preset: str, steps: int, batch: int) -> list:
    """The single-process network in a process of its own: [[0, max RSS, s / step, 0, CPU s / step]]."""
    config = PRESETS[preset]
    torch.manual_seed(config.train.seed)
    net = Network(config.model)
    optimizer = make_optimizer(config, net.parameters())
    images = _images(config.model, batch)
    _train(net, optimizer, images, 1)
    start, cpu = time.perf_counter(), cpu_seconds()
    _train(net, optimizer, images, steps)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return [[0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, seconds / steps, 0.0, cpu / steps]]


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,paper", help="measured presets (parts 2 and 3)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps (small and tiny)")
    parser.add_argument("--paper-steps", type=int, default=2, help="measured steps of paper (~20 s each)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process (part 3)")
    parser.add_argument("--grids", default="1x1,1x2,2x2", help="measured grids (part 3 needs 1x1 and 1x2)")
    args = parser.parse_args()
    print(f"CPU: {processor_name()}; load average at start {load()}")

    paper = PRESETS["paper"].model
    print(f"\n1. paper preset from the geometry, batch {args.batch}, per rank (the largest rank), per step")
    print("| grid | ranks | halo bytes received | parameter bytes (W1+W2) | activation bytes | halo / parameters |")
    print("|---|---|---|---|---|---|")
    for grid in [(1, 1), (2, 2), (4, 4), (13, 13)]:
        row = geometry_row(paper, grid, args.batch)
        print(f"| {row['grid']} | {grid[0] * grid[1]} | {gb(row['halo'])} | {gb(row['params'])} | "
              f"{gb(row['acts'])} | {row['halo'] / row['params']:.4f} |")

    print(f"\n2. measured, batch {args.batch}: 1x1 the single-process network with {args.threads} threads, the "
          "grids one thread per rank")
    print("| preset | grid | rank | halo bytes received / step (geometry) | peak RSS | s / step | in exchanges | "
          "CPU s / step |")
    print("|---|---|---|---|---|---|---|---|")
    throughput = []
    for preset in args.presets.split(","):
        steps = args.paper_steps if preset == "paper" else args.steps
        model = PRESETS[preset].model
        torch.set_num_threads(args.threads)
        dense = dense_gflops(n=1024, repeats=5)
        seconds, cpu = {}, {}
        for grid in [parse_grid(g) for g in args.grids.split(",")]:
            world = grid[0] * grid[1]
            if world == 1:
                rows = run_ranks(_single_rank, 1, (preset, steps, args.batch), threads=args.threads)
            else:
                rows = run_ranks(_measure_rank, world, (preset, grid, steps, args.batch))
            seconds[grid], cpu[grid] = max(row[2] for row in rows), sum(row[4] for row in rows)
            predicted = geometry_row(model, grid, args.batch)["halo"]
            for rank, (received, rss, per_step, waited, cpu_step) in enumerate(rows):
                print(f"| {preset} | {grid[0]}x{grid[1]} | {rank} | {gb(received)} ({gb(predicted)} max) | "
                      f"{gb(rss)} | {per_step:.3f} | {100 * waited / per_step:.0f}% | {cpu_step:.3f} |", flush=True)
        throughput.append((preset, dense, args.batch / seconds[(1, 1)], args.batch / seconds[(1, 2)],
                           seconds[(1, 1)] / seconds[(1, 2)], cpu[(1, 1)] / cpu[(1, 2)]))

    print(f"\n3. throughput in the same run: 1x1 with {args.threads} threads against 1x2 with 1 thread per rank")
    print("(by CPU time: the 1x1 process's CPU seconds per step over the sum of the 1x2 ranks'; what the ratio of\n"
          "wall times would be on two idle cores if both ran at full speed, whatever the load from others)")
    print(f"| preset | dense float32 matmul ({args.threads} threads) | 1x1 images/s | 1x2 images/s | 1x2 / 1x1 | "
          "1x2 / 1x1 by CPU time |")
    print("|---|---|---|---|---|---|")
    for preset, dense, single, blocks, ratio, by_cpu in throughput:
        print(f"| {preset} | {dense:.1f} GFLOP/s | {single:.2f} | {blocks:.2f} | {ratio:.2f} | {by_cpu:.2f} |")
    print(f"load average at the end {load()}")

if __name__ == "__main__":
    main()
