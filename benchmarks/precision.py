"""The objective of trained runs on the same 1,000 fixed images, evaluated in float32: what bf16 training changes.

Train the same preset from the same seed in both precisions, then compare:

    catneuron train --data embedded --preset small --steps 2000 --seed 1 --out runs/f32
    catneuron train --data embedded --preset small --steps 2000 --seed 1 --precision bf16 --out runs/bf16
    python benchmarks/precision.py runs/f32 runs/bf16

Prints each run's objective (the sum over stages of reconstruction + lambda * sparsity, mean per image) and its
difference from the first run's.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from catneuron.data.embedded import EmbeddedCorpus
from catneuron.store.runs import load_network

IMAGES, BATCH, SEED = 1000, 100, 12345  # a seed no training run draws its batches from by default


@torch.no_grad()
def objective(run: str) -> float:
    network, ckpt = load_network(run)
    network.set_precision("float32")
    model = ckpt.config.model
    corpus = EmbeddedCorpus(size=model.input_size, channels=model.channels)
    batches = itertools.islice(corpus.batches(BATCH, seed=SEED), IMAGES // BATCH)
    return sum(float(network.loss(network(images))) for images in batches) / (IMAGES // BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders; the first is the reference")
    args = parser.parse_args()
    reference = None
    for run in args.runs:
        value = objective(run)
        reference = value if reference is None else reference
        print(f"{run}: objective {value:.2f} on {IMAGES} fixed images ({value / reference - 1:+.2%} vs {args.runs[0]})")


if __name__ == "__main__":
    main()
