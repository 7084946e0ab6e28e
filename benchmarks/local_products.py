"""Each of the layer's three products alone (contract, spread, correlate), compiled and swept, on one thread.

Prints GFLOP/s per product as the best of `--repeats` calls in CPU time (`time.process_time`, which other jobs
on a shared machine move less than wall time), beside a 512^3 dense float32 matmul timed the same way in the
same process, the processor and the load: where the layer's time goes, product by product.

    python benchmarks/local_products.py [--shapes small paper] [--repeats 20] [--impls compiled sweeps]

`paper` is the paper's stage-1 shape on a band of 40 output rows of the full width (the whole image's products
take seconds each; the rates compare).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from catneuron.model import local_cpp, local_reference
from catneuron.model.local_reference import Geometry
from catneuron.store.rates import processor_name

SHAPES = {  # channels, (height, width), kernel, stride, maps, batch
    "small": (1, (32, 32), 8, 1, 8, 100),
    "paper": (3, (18 + 39, 200), 18, 1, 8, 100),
}
IMPLS = {"compiled": local_cpp, "sweeps": local_reference}


def best_seconds(function: Callable[..., object], operands: tuple, repeats: int) -> float:
    function(*operands)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function(*operands)
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"one thread, {processor_name()}, load average {os.getloadavg()[0]:.1f}, best of {args.repeats} in CPU time")
    for name in args.shapes:
        c, size, k, s, maps, batch = SHAPES[name]
        geo = Geometry(*size, c, k, s, batch, local_reference.TILE_BYTES, 4)
        positions = geo.out_h * geo.out_w
        image, codes = torch.randn(*size, c, batch), torch.randn(positions, maps, batch)
        weight, grad = torch.randn(positions, maps, k * k * c), torch.empty(positions, maps, k * k * c)
        operands = {"contract": (image, weight, geo), "spread": (codes, weight, geo),
                    "correlate": (image, codes, geo, grad)}
        flop = 2.0 * positions * maps * k * k * c * batch
        a = torch.randn(512, 512)
        dense = 2 * 512**3 / best_seconds(torch.mm, (a, a), 4 * args.repeats) / 1e9
        print(f"\n{name} stage-1 shape {SHAPES[name]}: {flop / 1e9:.2f} GFLOP a product; dense {dense:.1f} GFLOP/s")
        for impl in args.impls:
            line = f"  {impl:9s}"
            for product, operand in operands.items():
                rate = flop / best_seconds(getattr(IMPLS[impl], product), operand, args.repeats) / 1e9
                line += f"  {product} {rate:6.1f} GFLOP/s ({rate / dense:4.0%})"
            print(line)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
