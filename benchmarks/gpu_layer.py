"""The locally connected layer (encoder W1 + decoder W2, forward + backward) on a GPU, float32 and bfloat16.

First checks the fused kernels (catneuron.model.triton_local) against the sweeps of catneuron.model.local_reference
at the full shape on the same device (largest error relative to the largest entry, per product), then
prints, per dtype and batch, TFLOP/s of the layer against the device's dense matmul rate in that dtype
measured in the same run, and the CUDA allocator's peak memory. FLOPs counted as benchmarks/local_layer.py
does: 12 * positions * maps * fan_in * batch.

    python benchmarks/gpu_layer.py [--device cuda] [--shape paper] [--batches 128 256 512]

`--device cpu --shape tiny` runs the same code on CPU (the sweeps for both sides of the check), to try
the script where there is no GPU.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from machine import dense_gflops, synchronize

from catneuron.model import local_reference
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.local_functional import backend
from catneuron.model.local_reference import Geometry, output_size

SHAPES = {  # channels, side, kernel, stride, maps
    "paper": (3, 200, 18, 1, 8),
    "tiny": (3, 12, 4, 1, 8),
}
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def check(shape: tuple, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """Largest difference between the device's products and the sweeps, relative to the sweeps' largest entry."""
    c, side, k, s, maps = shape
    geo = Geometry(side, side, c, k, s, batch, local_reference.TILE_BYTES, torch.finfo(dtype).bits // 8)
    positions = output_size(side, k, s) ** 2
    image = torch.randn(side, side, c, batch, device=device, dtype=dtype)
    weight = torch.randn(positions, maps, k * k * c, device=device, dtype=dtype)
    codes = torch.randn(positions, maps, batch, device=device, dtype=dtype)
    ops = backend(device, dtype)
    errors = {}
    for name, args in (("contract", (image, weight)), ("spread", (codes, weight)), ("correlate", (image, codes))):
        got = getattr(ops, name)(*args, geo).float()
        want = getattr(local_reference, name)(*(t.float() for t in args), geo)
        errors[name] = float((got - want).abs().max() / want.abs().max())
    return errors


def time_layer(shape: tuple, batch: int, device: torch.device, dtype: torch.dtype, repeats: int) -> tuple[float, float]:
    """Seconds per forward + backward step and peak memory in GB (the allocator's on CUDA, max RSS on CPU)."""
    c, side, k, s, maps = shape
    enc = LocallyConnected2d(c, maps, side, k, s).to(device, dtype)
    dec = LocalDecoder(c, maps, side, k, s).to(device, dtype)
    x = torch.randn(batch, c, side, side, device=device, dtype=dtype, requires_grad=True)

    def step():
        dec(enc(x)).float().square().sum().backward()

    step()  # compiles the kernels for this dtype
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    if device.type == "cuda":
        return seconds, torch.cuda.max_memory_allocated(device) / 2**30
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tf32", action="store_true", help="float32 products and matmuls as TF32 (as after "
                        "torch.set_float32_matmul_precision('high'), what --precision tf32 asks of the kernels)")
    parser.add_argument("--shape", default="paper", choices=list(SHAPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    device = torch.device(args.device)
    shape = SHAPES[args.shape]
    c, side, k, s, maps = shape
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}; torch {torch.__version__}; layer path: {backend(device, torch.float32).__name__}")
    print(f"{args.shape} stage-1 shape: {c} channels, {side}x{side}, kernel {k}, stride {s}, {maps} maps")
    print(f"float32 matmuls: torch.get_float32_matmul_precision() = {torch.get_float32_matmul_precision()!r}")
    n = 8192 if device.type == "cuda" else 512
    for dname in args.dtypes:
        dtype = DTYPES[dname]
        errors = check(shape, args.batches[0], device, dtype)
        print(f"\n{dname}: kernels vs sweeps at batch {args.batches[0]}, max |error| / max |entry|: "
              + ", ".join(f"{product} {error:.1e}" for product, error in errors.items()))
        dense = dense_gflops(device, dtype, n) / 1000
        print(f"{dname}: dense {n}^3 matmul {dense:.2f} TFLOP/s")
        for batch in args.batches:
            seconds, peak = time_layer(shape, batch, device, dtype, args.repeats)
            rate = 12.0 * output_size(side, k, s) ** 2 * maps * c * k * k * batch / seconds / 1e12
            print(f"  batch {batch:4d} {seconds * 1e3:8.2f} ms/step {rate:7.3f} TFLOP/s = {rate / dense:5.1%} of dense,"
                  f" peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
