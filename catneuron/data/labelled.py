"""Labelled image folders (one sub-folder per class, the ImageFolder layout) and the seeded half split.

Fine-tuning is the one place the project sees labels; they come from folder names only, so a user's
own dataset needs no manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catneuron.data.images import list_images, read_images
from catneuron.errors import UserError


@dataclass
class LabelledSet:
    """Decoded images, uint8 (N, C, S, S), their class indices (N,), the class names, and skipped files."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> LabelledSet:
        """Some of the images; `skipped` stays the list of files skipped when the whole set was read."""
        return LabelledSet(self.images[index], self.labels[index], self.classes, self.skipped)


@dataclass
class LabelledImages:
    """A concept's test set: images in [0, 1], float (N, C, S, S), and labels (1 = the concept, 0 = distractor)."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def positive_fraction(self) -> float:
        return float(self.labels.mean())


def class_folders(root: str | Path, flag: str) -> dict[str, list[Path]]:
    """Class name -> its image files (recursive), for every sub-folder of `root`, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{flag} {root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{flag} {root}: no class sub-folders (expected one folder of images per class)")
    return {p.name: list_images(p, flag) for p in folders}


def read_labelled(root: str | Path, size: int, channels: int, flag: str = "--train", min_per_class: int = 1,
                  classes: list[str] | None = None) -> LabelledSet:
    """Read an ImageFolder tree. `classes` fixes the label order (a validation folder may hold a subset)."""
    found = class_folders(root, flag)
    if classes is None:
        if len(found) < 2:
            raise UserError(f"{flag} {root}: only one class sub-folder ({next(iter(found))}); need two or more")
        classes = list(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{flag} {root}: class {unknown[0]!r} is not among the training classes")
    paths, labels = [], []
    for name, files in found.items():
        paths += files
        labels += [classes.index(name)] * len(files)
    decoded = read_images(paths, size, channels)
    kept = set(decoded.paths)
    kept_labels = np.array([label for path, label in zip(paths, labels, strict=True) if path in kept], dtype=np.int64)
    counts = np.bincount(kept_labels, minlength=len(classes))
    for name in found:
        if counts[classes.index(name)] < min_per_class:
            raise UserError(f"{flag} {root}: class {name!r} has {counts[classes.index(name)]} readable image(s), "
                            f"needs at least {min_per_class}")
    return LabelledSet(decoded.images, kept_labels, classes, decoded.skipped)


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: `fraction` of each class held out, at random under `seed`.

    Per class, so every class is on both sides (a class needs two images); a pure function of
    (labels, fraction, seed), so the two arms of a comparison and a rerun see the same halves.
    """
    if not 0 < fraction < 1:
        raise UserError(f"--split {fraction}: must be between 0 and 1 (the fraction held out for validation)")
    rng = np.random.default_rng([seed, 3])
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise UserError(f"--split {fraction}: class {label} has {len(members)} image(s), needs two to split")
        held = min(max(1, round(fraction * len(members))), len(members) - 1)
        val.append(members[:held])
        train.append(members[held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
