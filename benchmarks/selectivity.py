"""Throughput of the full selectivity scan: every unit of `small`, 20 thresholds and AUC, on 10,000 images.

Prints images/s and what it implies for the paper's 37,000-image test set. Random images and a
random-weight network: the scan's cost does not depend on what the units learned.

    python benchmarks/selectivity.py [--images 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from catneuron.analysis.activations import UnitIndex
from catneuron.analysis.evaluate import network_responses, scan_subset
from catneuron.model.config import PRESETS
from catneuron.model.network import Network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    model = PRESETS["small"].model
    network = Network(model).eval()
    rng = np.random.default_rng(0)
    images = rng.random((args.images, model.channels, model.input_size, model.input_size), dtype=np.float32)
    labels = (rng.random(args.images) < 0.352).astype(np.int64)
    start = time.perf_counter()
    responses = network_responses(network, images)
    result = scan_subset(responses, labels, np.arange(args.images))
    seconds = time.perf_counter() - start
    rate = args.images / seconds
    print(f"{len(UnitIndex(network)):,} units x {args.images:,} images: {seconds:.1f} s, {rate:,.0f} images/s "
          f"(activations, min/max, 20 thresholds, AUC); best accuracy {result.accuracy.max():.3f}")
    print(f"the paper's 37,000-image test set: {37_000 / rate:.0f} s")


if __name__ == "__main__":
    main()
