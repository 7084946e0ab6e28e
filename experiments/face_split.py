"""Lay out the real-data face experiment of the research issue as folders of symbolic links.

    python experiments/face_split.py ../shared/data OUT [--train-cifar 8000] [--positive-fraction 0.352]

OUT/train:        CIFAR-10 test images (all but the held-out ones) + one half of faces/wild (by file)
OUT/train_nofaces: the same CIFAR images alone (the no-face control corpus)
OUT/test_faces:   faces from the other half of faces/wild
OUT/test_other:   held-out CIFAR-10 images, as many as the positive fraction asks
The split is by sorted file name with a fixed seed, so the same OUT comes out every time.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def link_all(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        target = folder / f"{i:06d}{path.suffix}"
        if not target.exists():
            target.symlink_to(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train-cifar", type=int, default=8000)
    parser.add_argument("--train-faces", type=int, default=None, help="faces in training (default: the whole half)")
    parser.add_argument("--positive-fraction", type=float, default=13026 / 37000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    faces = sorted((args.data / "faces" / "wild").glob("*.jpg"))
    cifar = sorted((args.data / "distractors" / "cifar10_test").rglob("*.jpg"))
    rng.shuffle(faces)
    rng.shuffle(cifar)
    train_faces, test_faces = faces[: len(faces) // 2], faces[len(faces) // 2:]
    if args.train_faces is not None:
        train_faces = train_faces[: args.train_faces]
    train_cifar, heldout = cifar[: args.train_cifar], cifar[args.train_cifar:]
    n_faces = round(len(heldout) * args.positive_fraction / (1 - args.positive_fraction))
    link_all(train_cifar + train_faces, args.out / "train")
    link_all(train_cifar, args.out / "train_nofaces")
    link_all(test_faces[:n_faces], args.out / "test_faces")
    link_all(heldout, args.out / "test_other")
    share = len(train_faces) / (len(train_faces) + len(train_cifar))
    print(f"train: {len(train_cifar)} CIFAR + {len(train_faces)} faces ({share:.1%} faces); "
          f"test: {n_faces} faces vs {len(heldout)} CIFAR ({n_faces / (n_faces + len(heldout)):.1%} positive)")


if __name__ == "__main__":
    main()
