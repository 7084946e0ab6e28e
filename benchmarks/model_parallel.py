"""Model parallelism: what a rank holds and exchanges per step, from the geometry and measured.

1. From the geometry alone (no allocation), per rank per training step of a batch: halo bytes received,
   parameter bytes held (W1 and W2; Adagrad doubles it), and activation bytes (the forward tensors kept for
   backward), for the `paper` preset on 1x1, 2x2, 4x4 and 13x13 blocks (the paper's 169 machines). The
   trainer refuses grids whose blocks are thinner than a halo (13x13 for `paper`); the exchange itself is
   general, so the table sizes it anyway.
2. Measured on spawned ranks (gloo, loopback) for `small` on 1x2 and 2x2: halo bytes received per step
   (counted at the receives), peak memory (max RSS) per rank, and steps/s.
3. Throughput on this machine in one run: the single-process network with `--threads` threads against
   1x2 blocks with one thread per rank, and the dense float32 matmul rate sampled in the same run.

    python benchmarks/model_parallel.py [--preset small] [--steps 20] [--batch 100] [--threads 2]

Run it under `flock /tmp/catneuron-heavy.lock` on a shared machine. `paper` on 2x2 would need about a
quarter of the 12 GB step per rank plus the whole model (3.8 GB) that every rank builds while it starts:
not on a shared 24 GB machine, so part 2 measures `small` only.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import time

import torch
import torch.distributed as dist

from catneuron.model.config import PRESETS, ModelConfig, stage_shapes
from catneuron.model.network import Network
from catneuron.parallel.grid import layout
from catneuron.parallel.halo import Exchange
from catneuron.parallel.launch import run_ranks
from catneuron.parallel.network import BlockNetwork
from catneuron.parallel.state import load_blocks
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
    for shape, stage in zip(stage_shapes(model), layout(model, grid), strict=True):
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


def _measure_rank(rank: int, world: int, preset: str, grid: tuple[int, int], steps: int, batch: int) -> dict | None:
    """Train `steps` steps on fixed random images; counts the bytes this rank receives."""
    received = [0]
    irecv = dist.irecv

    def counting(tensor, *args, **kwargs):
        received[0] += tensor.numel() * tensor.element_size()
        return irecv(tensor, *args, **kwargs)

    dist.irecv = counting
    config = PRESETS[preset]
    torch.manual_seed(0)
    net = BlockNetwork(config.model, grid, rank)
    optimizer = make_optimizer(config, net.parameters())
    load_blocks(net, optimizer, Network(config.model).state_dict(), None)
    m = config.model
    images = torch.rand(batch, m.channels, m.input_size, m.input_size, generator=torch.Generator().manual_seed(1))
    _train(net, optimizer, images, 2)
    dist.barrier()
    received[0] = 0
    start = time.perf_counter()
    _train(net, optimizer, images, steps)
    dist.barrier()
    seconds = time.perf_counter() - start
    stats = torch.tensor([received[0] / steps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0,
                          steps / seconds], dtype=torch.float64)
    every = [torch.empty_like(stats) for _ in range(world)]
    dist.all_gather(every, stats)
    return [row.tolist() for row in every] if rank == 0 else None


def _train(net, optimizer, images: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        net.loss(net(images)).backward()
        optimizer.step()


def single_process_rate(preset: str, steps: int, batch: int) -> float:
    config = PRESETS[preset]
    torch.manual_seed(0)
    net = Network(config.model)
    optimizer = make_optimizer(config, net.parameters())
    m = config.model
    images = torch.rand(batch, m.channels, m.input_size, m.input_size)
    _train(net, optimizer, images, 2)
    start = time.perf_counter()
    _train(net, optimizer, images, steps)
    return steps / (time.perf_counter() - start)


def dense_gflops(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 10 * n**3 / (time.perf_counter() - start) / 1e9


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="measured preset (parts 2 and 3)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process (part 3)")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start {', '.join(f'{x:.1f}' for x in os.getloadavg())}")

    paper = PRESETS["paper"].model
    print(f"\n1. paper preset from the geometry, batch {args.batch}, per rank (the largest rank), per step")
    print("| grid | ranks | halo bytes received | parameter bytes (W1+W2) | activation bytes | halo / parameters |")
    print("|---|---|---|---|---|---|")
    for grid in [(1, 1), (2, 2), (4, 4), (13, 13)]:
        row = geometry_row(paper, grid, args.batch)
        print(f"| {row['grid']} | {grid[0] * grid[1]} | {gb(row['halo'])} | {gb(row['params'])} | "
              f"{gb(row['acts'])} | {row['halo'] / row['params']:.4f} |")

    model = PRESETS[args.preset].model
    print(f"\n2. {args.preset} measured, batch {args.batch}, {args.steps} steps, 1 thread per rank")
    print("| grid | rank | halo bytes received / step (geometry) | peak RSS | steps/s |")
    print("|---|---|---|---|---|")
    for grid in [(1, 2), (2, 2)]:
        predicted = geometry_row(model, grid, args.batch)["halo"]
        rows = run_ranks(_measure_rank, grid[0] * grid[1], (args.preset, grid, args.steps, args.batch))
        for rank, (received, rss, rate) in enumerate(rows):
            print(f"| {grid[0]}x{grid[1]} | {rank} | {gb(received)} ({gb(predicted)} max) | {gb(rss)} | {rate:.2f} |")

    print(f"\n3. {args.preset} throughput on this machine, in one run")
    torch.set_num_threads(args.threads)
    dense = dense_gflops()
    single = single_process_rate(args.preset, args.steps, args.batch)
    torch.set_num_threads(1)
    one_thread = single_process_rate(args.preset, args.steps, args.batch)
    blocks = run_ranks(_measure_rank, 2, (args.preset, (1, 2), args.steps, args.batch))[0][2]
    print(f"dense float32 matmul ({args.threads} threads): {dense:.1f} GFLOP/s")
    print(f"| run | images/s | ratio to 1x1 with {args.threads} threads |")
    print("|---|---|---|")
    for name, rate in ((f"1x1, {args.threads} threads", single), ("1x1, 1 thread", one_thread),
                       ("1x2, 1 thread per rank", blocks)):
        print(f"| {name} | {rate * args.batch:.1f} | {rate / single:.2f} |")


if __name__ == "__main__":
    main()
