"""The paper-sized `evaluate`: 37,000 test images, 100,000 linear filters, every unit of `small`.

Runs the default path of `catneuron evaluate` (catneuron.analysis.evaluate.evaluate: trained and
random-weights networks, linear filters, held-out protocol) on generated images and prints its time, its
peak memory (resident set), and the share of the time the linear filters' matrix products alone would
take at this machine's dense matmul rate, sampled in the same run (the machine may be shared).

    python benchmarks/selectivity.py [--images 37000] [--filters 100000] [--preset small]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from machine import dense_gflops

from catneuron.analysis.activations import UnitIndex
from catneuron.analysis.evaluate import SCAN_BYTES, block_size, evaluate
from catneuron.data.labelled import LabelledImages
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.store.rates import processor_name


def training_batches(shape: tuple[int, ...], seed: int = 1, size: int = 500):
    rng = np.random.default_rng(seed)
    while True:
        yield torch.as_tensor(rng.random((size, *shape), dtype=np.float32))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=37_000)
    parser.add_argument("--filters", type=int, default=100_000)
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    model = PRESETS[args.preset].model
    shape = (model.channels, model.input_size, model.input_size)
    rng = np.random.default_rng(0)
    images = rng.random((args.images, *shape), dtype=np.float32)
    labels = (rng.random(args.images) < 0.352).astype(np.int64)
    torch.manual_seed(0)
    network = Network(model).eval()
    rate = dense_gflops() * 1e9
    before = peak_mib()
    start = time.perf_counter()
    result = evaluate(network, LabelledImages(images, labels), "faces", training_batches(shape),
                      n_filters=args.filters)
    seconds = time.perf_counter() - start
    dims = int(np.prod(shape))
    linear_flops = 2 * args.images * args.filters * dims
    print(f"cpu: {processor_name()}, {torch.get_num_threads()} threads; dense matmul {rate / 1e9:.1f} GFLOP/s")
    print(f"evaluate, preset {args.preset}: {args.images:,} images x ({len(UnitIndex(network)):,} units, twice "
          f"(trained, random weights) + {args.filters:,} linear filters of {dims} pixels): {seconds:.1f} s; "
          f"best neuron {result['best_neuron']['id']}")
    print(f"peak memory: {peak_mib():,.0f} MiB (test images {images.nbytes / 2**20:,.0f} MiB, before the run "
          f"{before:,.0f} MiB; scan budget {SCAN_BYTES / 2**20:.0f} MiB, "
          f"{block_size(args.images):,} filters per block)")
    print(f"the filters' matrix products alone at the sampled matmul rate: {linear_flops / rate:.1f} s "
          f"({linear_flops / rate / seconds:.0%} of the run)")


if __name__ == "__main__":
    main()
