"""Several concepts against one distractor set, each at the face set's positive:negative ratio."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from catneuron.data.images import ImageSet, read_folder
from catneuron.data.labelled import LabelledImages
from catneuron.errors import UserError

log = logging.getLogger(__name__)


def concept_slug(concept: str) -> str:
    """A file-name-safe form of a user's concept name."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", concept).strip("_")
    return slug or "concept"


def parse_concepts(values: list[str], default_name: str, flag: str = "--positives") -> list[tuple[str, str]]:
    """`--positives` values: `NAME=DIR` or a bare `DIR` (named `default_name`); names must be distinct, valid
    UTF-8, and so must the file names they become (`a b` and `a_b` would write the same results file)."""
    pairs = []
    for value in values:
        name, sep, folder = value.partition("=")
        pairs.append((name, folder) if sep and name else (default_name, value))
    names = [n for n, _ in pairs]
    for name in names:
        if not printable(name):
            raise UserError(f"{flag}: the concept name {name!r} is not valid UTF-8; name it in UTF-8")
    if len(set(names)) != len(names):
        raise UserError(f"{flag}: concept names repeat ({', '.join(names)}); write NAME=DIR")
    slugs: dict[str, str] = {}
    for name in names:
        other = slugs.setdefault(concept_slug(name), name)
        if other != name:
            raise UserError(f"{flag}: concepts {other!r} and {name!r} would share the results file "
                            f"{concept_slug(name)}.json; rename one")
    return pairs


def printable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (a name from argv that is not holds surrogate escapes, which the
    results JSON, the figures and the watch's fingerprint cannot write)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
                 positive_fraction: float | None = None, say: Callable[[str], None] = log.info
                 ) -> list[tuple[str, LabelledImages]]:
    """One labelled set per concept against the shared distractors, at the model's size and channels.

    With `positive_fraction`, every concept is subsampled (as few images dropped as possible) to that share
    of positives. Without it the first concept (the face set) keeps every image and sets the
    positive:negative ratio, and the others are subsampled to the same ratio, as the paper does for cats
    and bodies. A set that cannot mean anything is refused: a class with fewer than 2 images (the held-out
    protocol needs one in each half), or an image that is both a positive and a negative.
    """
    neg = _read(negatives, "--negatives", size, channels, say)
    neg_hashes = _hashes(neg)
    ratio = None if positive_fraction is None else (1 - positive_fraction) / positive_fraction
    sets = []
    for name, folder in concepts:
        pos = _read(folder, "--positives", size, channels, say)
        _disjoint(name, folder, pos, negatives, neg, neg_hashes)
        if ratio is None:
            ratio = len(neg) / len(pos)
            keep_pos, keep_neg = np.arange(len(pos)), np.arange(len(neg))
        else:
            keep_pos, keep_neg = ratio_subsample(len(pos), len(neg), ratio)
        _meaningful(name, (len(keep_pos), len(pos)), (len(keep_neg), len(neg)), positive_fraction, say)
        images = np.concatenate([pos.images[keep_pos], neg.images[keep_neg]]).astype(np.float32) / 255.0
        labels = np.array([1] * len(keep_pos) + [0] * len(keep_neg), dtype=np.int64)
        sets.append((name, LabelledImages(images, labels)))
    return sets


def _meaningful(name: str, positives: tuple[int, int], negatives: tuple[int, int], fraction: float | None,
                say: Callable[[str], None]) -> None:
    """Refuse a class of fewer than 2 images (kept, read); say so when subsampling drops most of a class."""
    why = (f"subsampled to --positive-fraction {fraction:.3g}" if fraction is not None
           else "subsampled to the first concept's ratio")
    kept = f"{positives[0]:,} of {positives[1]:,} positives and {negatives[0]:,} of {negatives[1]:,} negatives"
    if min(positives[0], negatives[0]) < 2:
        raise UserError(f"concept {name!r}: {kept} ({why}); each class needs at least 2 images, one per held-out "
                        "half")
    if positives[0] < positives[1] / 2 or negatives[0] < negatives[1] / 2:
        say(f"catneuron: concept {name!r}: keeping {kept} ({why})")


def _disjoint(name: str, folder: str, pos: ImageSet, negatives: str, neg: ImageSet, neg_hashes: dict[str, Path]
              ) -> None:
    """Refuse a concept whose images are also distractors: the same file, or another file with the same bytes."""
    shared = [(path, neg_hashes[digest]) for digest, path in _hashes(pos).items() if digest in neg_hashes]
    if shared:
        a, b = shared[0]
        example = f"{a}" if Path(a).resolve() == Path(b).resolve() else f"{a} = {b}"
        raise UserError(f"--positives {folder} and --negatives {negatives}: {len(shared):,} image(s) of concept "
                        f"{name!r} are also distractors (e.g. {example}); the two sets must not overlap")


def _hashes(found: ImageSet) -> dict[str, Path]:
    """SHA-256 of each file's bytes -> the first file with them."""
    out: dict[str, Path] = {}
    for path in found.paths:
        out.setdefault(hashlib.sha256(Path(path).read_bytes()).hexdigest(), path)
    return out


def _read(folder: str, flag: str, size: int, channels: int, say: Callable[[str], None]) -> ImageSet:
    """Grey and colour both accepted: converted to the model's channels and resized to its input."""
    found = read_folder(folder, size, channels, flag=flag)
    for note in found.notes():
        say(f"catneuron: {flag} {folder}: {note}")
    return found
