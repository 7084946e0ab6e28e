"""The embedded corpus: images that ship inside installed packages, so the demo needs no download.

Faces: scikit-image's `data.lfw_subset()` (100 LFW faces, then 100 LFW crops without faces, 25x25
grey), split once, deterministically, into a training half and a test half. Photos: scikit-image
and scikit-learn sample photographs, split into training photos and held-out photos.

The training stream is unlabeled: random crops, rescalings and flips of the training photos and
of the training half of the non-face crops, in which a training face (itself randomly shifted,
scaled and mirrored) appears at `face_rate` (3% by default, like the paper's frames). The stream
never carries a label; which samples are faces is not even recorded.

The test set is the held-out faces (and their mirror images) against distractors no training
crop came from: the held-out non-face crops and crops of the held-out photos, with as many
distractors as the paper's ratio asks (13,026 faces : 23,974 distractors, 35.2% positives).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from catneuron.data.labelled import LabelledImages
from catneuron.data.seeding import step_rng

PAPER_POSITIVE_FRACTION = 13026 / (13026 + 23974)
TRAIN_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coins", "grass", "hubble_deep_field",
                "immunohistochemistry", "page", "retina", "sklearn:china.jpg")
HELDOUT_PHOTOS = ("clock", "coffee", "gravel", "moon", "rocket", "text", "cell", "sklearn:flower.jpg")


def _grey(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        array = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return array.astype(np.float32) / (255.0 if array.max() > 1.5 else 1.0)


def _rgb(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32) / (255.0 if array.max() > 1.5 else 1.0)
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]


def load_photo(name: str, channels: int) -> np.ndarray:
    """A packaged photo as float32 (H, W) grey or (H, W, 3) colour in [0, 1]."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        array = load_sample_image(name.split(":", 1)[1])
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
    return _grey(array) if channels == 1 else _rgb(array)


Planes = tuple[Image.Image, ...]  # one 32-bit float PIL image per channel


def planes(array: np.ndarray) -> Planes:
    """Float (H, W[, C]) -> PIL float planes, made once so that every crop is a resize of a box, not a copy."""
    stack = array[..., None] if array.ndim == 2 else array
    return tuple(Image.fromarray(np.ascontiguousarray(stack[..., c], dtype=np.float32))
                 for c in range(stack.shape[2]))


def resize(image: Planes, size: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The image, or its `box` (left, top, right, bottom), -> (C, size, size) float32, bilinear.

    `reducing_gap` first averages large downscales by an integer factor: three times faster on the
    demo's crops, and still antialiased."""
    bilinear = Image.Resampling.BILINEAR
    return np.stack([np.asarray(p.resize((size, size), bilinear, box=box, reducing_gap=2.0)) for p in image])


def random_crop(image: Planes, size: int, rng: np.random.Generator, min_scale: float,
                max_scale: float) -> np.ndarray:
    """A square crop covering min_scale..max_scale of the shorter side, resized and maybe mirrored."""
    w, h = image[0].size
    side = max(4, int(min(h, w) * rng.uniform(min_scale, max_scale)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = resize(image, size, (left, top, left + side, top + side))
    return crop[..., ::-1] if rng.random() < 0.5 else crop


class EmbeddedCorpus:
    """The demo's data. `split_seed` fixes which faces and crops are for training and which for test."""

    def __init__(self, size: int = 32, channels: int = 1, face_rate: float = 0.03, split_seed: int = 0) -> None:
        import skimage.data

        self.size, self.channels, self.face_rate = size, channels, face_rate
        lfw = skimage.data.lfw_subset().astype(np.float32)
        faces, nonfaces = lfw[:100], lfw[100:]
        colour = _rgb if channels == 3 else np.asarray

        def halves(images: np.ndarray, seed: int) -> tuple[list[Planes], list[Planes]]:
            order = np.random.default_rng(seed).permutation(len(images))
            half = len(images) // 2
            return [planes(colour(f)) for f in images[order[:half]]], [planes(colour(f)) for f in images[order[half:]]]

        self.train_faces, self.test_faces = halves(faces, split_seed)
        self.train_nonfaces, self.test_nonfaces = halves(nonfaces, split_seed + 1)
        self.train_photos = [planes(load_photo(n, channels)) for n in TRAIN_PHOTOS]
        self.heldout_photos = [planes(load_photo(n, channels)) for n in HELDOUT_PHOTOS]
        self.description = (f"embedded corpus ({len(self.train_photos)} photos, 50 LFW non-face crops, "
                            f"50 LFW faces at {face_rate:.0%})")

    def training_sample(self, rng: np.random.Generator) -> np.ndarray:
        """One unlabeled (C, S, S) training image."""
        if rng.random() < self.face_rate:
            face = self.train_faces[rng.integers(len(self.train_faces))]
            return random_crop(face, self.size, rng, 0.8, 1.0)
        if rng.random() < 0.2:
            crop = self.train_nonfaces[rng.integers(len(self.train_nonfaces))]
            return random_crop(crop, self.size, rng, 0.8, 1.0)
        photo = self.train_photos[rng.integers(len(self.train_photos))]
        return random_crop(photo, self.size, rng, 0.05, 0.5)

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        step = start_step
        while True:
            rng = step_rng(seed, step)
            batch = np.stack([self.training_sample(rng) for _ in range(batch_size)])
            yield torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            step += 1

    def test_set(self, positive_fraction: float = PAPER_POSITIVE_FRACTION, seed: int = 0) -> LabelledImages:
        """Held-out faces and mirrors vs. held-out distractors, at the paper's positive fraction."""
        rng = np.random.default_rng([seed, 7])
        faces = [resize(f, self.size) for f in self.test_faces]
        faces += [f[..., ::-1] for f in faces]
        n_neg = round(len(faces) * (1 - positive_fraction) / positive_fraction)
        negatives = [resize(f, self.size) for f in self.test_nonfaces]
        negatives += [n[..., ::-1] for n in negatives]
        while len(negatives) < n_neg:
            photo = self.heldout_photos[rng.integers(len(self.heldout_photos))]
            negatives.append(random_crop(photo, self.size, rng, 0.05, 0.5))
        negatives = negatives[:n_neg]
        images = np.ascontiguousarray(np.stack(faces + negatives), dtype=np.float32)
        labels = np.array([1] * len(faces) + [0] * len(negatives), dtype=np.int64)
        return LabelledImages(images, labels)
