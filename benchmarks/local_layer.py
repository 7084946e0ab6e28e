"""Speed and memory of the locally connected layer (encoder W1 + decoder W2, forward + backward).

Prints, per shape, GFLOP/s of catneuron's layer (on the compiled CPU kernels where they build, and on the
bmm sweeps), of the obvious `F.unfold` + `bmm`, of the broadcast-multiply recipe common on forums, and of
this machine's dense float32 matmul, all measured in the same run, with each implementation's peak memory
(measured in a fresh process).
FLOPs counted: 12 * positions * maps * fan_in * batch (encoder and decoder; forward 2, backward 4).
Each step frees the last one's gradients first, as a trainer does; the CPU time of a step is printed
split into user and system time (page faults for fresh memory show as system time).

    python benchmarks/local_layer.py [--shapes small paper] [--rows N] [--contend]

At the paper's shape the reference implementations need 26+ GB, so every implementation is also
timed on a band of `--rows` output rows of the full width (the same rows, windows, maps and batch,
fewer of them): the rates compare.

`--contend` times catneuron's layer and dense matmul again beside a busy process (one core's worth
of pure-Python spinning, as another user's job on a shared machine) and prints the slowdown of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch
import torch.nn.functional as F
from machine import busy_process, dense_gflops, in_fresh_process

from catneuron.model import local_cpp
from catneuron.model.local import LocalDecoder, LocallyConnected2d, output_size
from catneuron.store.rates import processor_name

SHAPES = {  # channels, (height, width), kernel, stride, maps, batch
    "small": (1, (32, 32), 8, 1, 8, 100),
    "paper": (3, (200, 200), 18, 1, 8, 100),
}


def positions(size: tuple[int, int], k: int, s: int) -> int:
    return output_size(size[0], k, s) * output_size(size[1], k, s)


def flops(c: int, size: tuple[int, int], k: int, s: int, maps: int, batch: int) -> float:
    return 12.0 * positions(size, k, s) * maps * c * k * k * batch


def fresh_grads(*tensors: torch.Tensor) -> None:
    """Free the last step's gradients, as a trainer's `zero_grad(set_to_none=True)` does."""
    for t in tensors:
        t.grad = None


def ours(c, size, k, s, maps, batch):
    enc, dec = LocallyConnected2d(c, maps, size, k, s), LocalDecoder(c, maps, size, k, s)
    x = torch.randn(batch, c, *size, requires_grad=True)

    def step():
        fresh_grads(x, enc.weight, dec.weight)
        dec(enc(x)).square().sum().backward()
    return step


def sweeps(c, size, k, s, maps, batch):
    """catneuron's layer on the bmm sweeps, as where no compiler builds the kernels."""
    local_cpp.available = lambda: False
    return ours(c, size, k, s, maps, batch)


def unfold_bmm(c, size, k, s, maps, batch):
    w1 = torch.randn(positions(size, k, s), maps, c * k * k, requires_grad=True)
    w2 = torch.randn(positions(size, k, s), c * k * k, maps, requires_grad=True)
    x = torch.randn(batch, c, *size, requires_grad=True)

    def step():
        fresh_grads(x, w1, w2)
        patches = F.unfold(x, k, stride=s).permute(2, 1, 0)  # L, P, B
        codes = torch.bmm(w1, patches)
        rec = torch.bmm(w2, codes).permute(2, 1, 0)  # B, P, L
        F.fold(rec, size, k, stride=s).square().sum().backward()
    return step


def broadcast(c, size, k, s, maps, batch):
    w1 = torch.randn(1, positions(size, k, s), maps, c * k * k, requires_grad=True)
    w2 = torch.randn(1, positions(size, k, s), maps, c * k * k, requires_grad=True)
    x = torch.randn(batch, c, *size, requires_grad=True)

    def step():
        fresh_grads(x, w1, w2)
        patches = F.unfold(x, k, stride=s).transpose(1, 2).unsqueeze(2)  # B, L, 1, P
        codes = (patches * w1).sum(-1)  # B, L, O
        rec = (codes.unsqueeze(-1) * w2).sum(2)  # B, L, P
        F.fold(rec.transpose(1, 2), size, k, stride=s).square().sum().backward()
    return step


IMPLS = {"catneuron": ours, "sweeps": sweeps, "unfold+bmm": unfold_bmm, "broadcast": broadcast}


def band(shape: tuple, rows: int) -> tuple:
    """The same layer on an input of the full width, just tall enough for `rows` output rows."""
    c, (height, width), k, s, maps, batch = shape
    return (c, (min(height, k + s * (rows - 1)), width), k, s, maps, batch)


def cpu_times() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def time_one(impl: str, shape: tuple, repeats: int) -> dict:
    step = IMPLS[impl](*shape)
    step()  # warm-up
    start, (user, system) = time.perf_counter(), cpu_times()
    for _ in range(repeats):
        step()
    seconds = (time.perf_counter() - start) / repeats
    user_after, system_after = cpu_times()
    return {"seconds": seconds, "gflops": flops(*shape) / seconds / 1e9,
            "user_s": (user_after - user) / repeats, "system_s": (system_after - system) / repeats,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def contention(shapes: list[str], rows: int) -> None:
    """catneuron's layer and dense matmul, quiet then beside a busy process: the slowdown of each."""
    print("\nbeside a busy process (one core spinning):")
    cases = [(name, band(SHAPES[name], rows) if name == "paper" else SHAPES[name]) for name in shapes]
    for name, shape in cases:
        repeats = 1 if name == "paper" else 5
        for impl in ("catneuron", "sweeps"):
            quiet = in_subprocess(impl, shape, repeats)
            with busy_process():
                busy = in_subprocess(impl, shape, repeats)
            if "error" in quiet or "error" in busy:
                print(f"  {name:20s} {impl} failed: {quiet.get('error') or busy.get('error')}")
                continue
            print(f"  {name:20s} {impl:9s} {quiet['gflops']:6.1f} -> {busy['gflops']:6.1f} GFLOP/s: "
                  f"{busy['seconds'] / quiet['seconds']:.1f}x slower")
    quiet = dense_gflops()
    with busy_process():
        busy = dense_gflops()
    print(f"  {'dense matmul':20s}           {quiet:6.1f} -> {busy:6.1f} GFLOP/s: {quiet / busy:.1f}x slower")


def in_subprocess(impl: str, shape: tuple, repeats: int) -> dict:
    return in_fresh_process(__file__, [impl, json.dumps(shape), str(repeats)])


def summarize(summary: list[tuple[str, dict]], dense: list[float]) -> None:
    """Each case's rate as a share of the best dense rate sampled in the run, beside the sweeps and unfold+bmm."""
    best = max(dense)
    print(f"\ndense float32 matmul 2048^3, sampled {len(dense)} times in this run: "
          f"{', '.join(f'{d:.0f}' for d in dense)} GFLOP/s; shares below are of the best, {best:.1f}")
    for case, results in summary:
        ours, base = results.get("catneuron", {}), results.get("unfold+bmm", {})
        if "gflops" not in ours:
            continue
        line = f"  {case:20s} catneuron {ours['gflops']:6.1f} GFLOP/s = {ours['gflops'] / best:5.1%} of dense"
        if "gflops" in results.get("sweeps", {}):
            swept = results["sweeps"]["gflops"]
            line += f" (sweeps {swept:.1f} = {swept / best:.1%}: {ours['gflops'] / swept:.1f}x)"
        if "gflops" in base:
            line += f"; {ours['gflops'] / base['gflops']:.1f}x unfold+bmm ({base['gflops']:.1f} GFLOP/s)"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rows", type=int, default=12, help="output rows of the band used at the paper shape")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--contend", action="store_true", help="also time the layer beside a busy process")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        impl, shape, repeats = args.one
        print(json.dumps(time_one(impl, tuple(json.loads(shape)), int(repeats))))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {processor_name()}, "
          f"load average {os.getloadavg()[0]:.1f}; catneuron's products: "
          f"{'compiled CPU kernels' if local_cpp.available() else 'bmm sweeps (no compiler)'}")
    dense = [dense_gflops()]  # sampled between cases: a shared machine's rate drifts
    summary = []
    for name in args.shapes:
        full = SHAPES[name]
        cases = [("full", full)]
        if name == "paper":
            cases.append((f"{args.rows}-row band", band(full, args.rows)))
        for label, shape in cases:
            print(f"\n{name} stage-1 shape {shape} (C, size, k, stride, maps, batch), {label}: "
                  f"{flops(*shape) / 1e9:.1f} GFLOP per step")
            results = {}
            for impl in args.impls:
                if label == "full" and name == "paper" and impl not in ("catneuron", "sweeps"):
                    print(f"  {impl:12s} skipped at full size: needs > 24 GB (see the band below)")
                    continue
                results[impl] = r = in_subprocess(impl, shape, repeats=1 if name == "paper" else 5)
                if "error" in r:
                    print(f"  {impl:12s} failed: {r['error']}")
                    continue
                print(f"  {impl:12s} {r['seconds']:8.3f} s/step {r['gflops']:7.1f} GFLOP/s  "
                      f"cpu {r['user_s']:.2f} s user + {r['system_s']:.2f} s system  peak {r['peak_mb']:,.0f} MB")
            summary.append((f"{name}, {label}", results))
            dense.append(dense_gflops())
    summarize(summary, dense)
    if args.contend:
        contention(args.shapes, args.rows)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
