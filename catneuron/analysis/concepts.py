"""Several concepts against one distractor set, each at the face set's positive:negative ratio."""

from __future__ import annotations

import logging
import re

import numpy as np

from catneuron.data.images import read_folder
from catneuron.data.labelled import LabelledImages
from catneuron.errors import UserError

log = logging.getLogger(__name__)


def concept_slug(concept: str) -> str:
    """A file-name-safe form of a user's concept name."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", concept).strip("_")
    return slug or "concept"


def parse_concepts(values: list[str], default_name: str) -> list[tuple[str, str]]:
    """`--positives` values: `NAME=DIR` or a bare `DIR` (named `default_name`); names must be distinct, and so
    must the file names they become (`a b` and `a_b` would write the same results file)."""
    pairs = []
    for value in values:
        name, sep, folder = value.partition("=")
        pairs.append((name, folder) if sep and name else (default_name, value))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise UserError(f"--positives: concept names repeat ({', '.join(names)}); write NAME=DIR")
    slugs: dict[str, str] = {}
    for name in names:
        other = slugs.setdefault(concept_slug(name), name)
        if other != name:
            raise UserError(f"--positives: concepts {other!r} and {name!r} would share the results file "
                            f"{concept_slug(name)}.json; rename one")
    return pairs


def ratio_subsample(n_positive: int, n_negative: int, ratio: float, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Indices keeping as many images as possible with negatives = round(positives * ratio).

    `ratio` is the reference set's negatives per positive (the face set's, as the paper keeps it
    for cats and bodies). Whichever side is short limits the other; the kept subsets are random.
    """
    positives = min(n_positive, int(np.floor((n_negative + 0.5) / ratio)))
    while positives > 0 and round(positives * ratio) > n_negative:
        positives -= 1
    if positives <= 0:
        raise UserError(f"too few images to keep the ratio 1:{ratio:.3g} ({n_positive} positives, "
                        f"{n_negative} negatives)")
    negatives = round(positives * ratio)
    rng = np.random.default_rng([seed, 5])
    return (np.sort(rng.choice(n_positive, positives, replace=False)),
            np.sort(rng.choice(n_negative, negatives, replace=False)))


def concept_sets(concepts: list[tuple[str, str]], negatives: str, size: int, channels: int,
                 positive_fraction: float | None = None) -> list[tuple[str, LabelledImages]]:
    """One labelled set per concept against the shared distractors, at the model's size and channels.

    With `positive_fraction`, every concept is subsampled (as few images dropped as possible) to that share
    of positives. Without it the first concept (the face set) keeps every image and sets the
    positive:negative ratio, and the others are subsampled to the same ratio, as the paper does for cats
    and bodies.
    """
    neg = _read(negatives, "--negatives", size, channels)
    ratio = None if positive_fraction is None else (1 - positive_fraction) / positive_fraction
    sets = []
    for name, folder in concepts:
        pos = _read(folder, "--positives", size, channels)
        if ratio is None:
            ratio = len(neg) / len(pos)
            keep_pos, keep_neg = np.arange(len(pos)), np.arange(len(neg))
        else:
            keep_pos, keep_neg = ratio_subsample(len(pos), len(neg), ratio)
        images = np.concatenate([pos[keep_pos], neg[keep_neg]]).astype(np.float32) / 255.0
        labels = np.array([1] * len(keep_pos) + [0] * len(keep_neg), dtype=np.int64)
        sets.append((name, LabelledImages(images, labels)))
    return sets


def _read(folder: str, flag: str, size: int, channels: int) -> np.ndarray:
    """Grey and colour both accepted: converted to the model's channels and resized to its input."""
    found = read_folder(folder, size, channels, flag=flag)
    if found.skipped:
        log.info(f"catneuron: {flag} {folder}: skipped {len(found.skipped)} unreadable image(s)")
    return found.images
