"""The paper's face census: OpenCV's Haar frontal-face detector on random 60x60 patches, and per image.

opencv-python-headless 5.0 ships neither `CascadeClassifier` nor the cascade files; 4.14.0.94 has
both, hence the pin in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height
Detector = Callable[[np.ndarray], list[Box]]  # grey uint8 (H, W) -> faces found
PATCH = 60
CASCADE = "haarcascade_frontalface_default.xml"

_cascade = None  # one per process: the classifier cannot be pickled to workers


def haar_faces(grey: np.ndarray) -> list[Box]:
    """Frontal faces in a grey uint8 image, with OpenCV's default detector settings (scale 1.1, 3 neighbours)."""
    global _cascade
    if _cascade is None:
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from ingest's worker processes
        _cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)  # type: ignore[attr-defined]
        if _cascade.empty():
            raise RuntimeError(f"OpenCV could not load {CASCADE}: install opencv-python-headless==4.14.0.94")
    found = _cascade.detectMultiScale(np.ascontiguousarray(grey), scaleFactor=1.1, minNeighbors=3)
    return [(int(x), int(y), int(w), int(h)) for x, y, w, h in found]


def grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB to (H, W) uint8 luma, the detector's input."""
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)


@dataclass
class Census:
    """Patches examined and patches with a face; sums across images and shards."""

    patches: int = 0
    faces: int = 0

    @property
    def fraction(self) -> float:
        return self.faces / self.patches if self.patches else float("nan")

    def __add__(self, other: Census) -> Census:
        return Census(self.patches + other.patches, self.faces + other.faces)


def patch_census(image: np.ndarray, count: int, rng: np.random.Generator, detector: Detector = haar_faces,
                 patch: int = PATCH) -> Census:
    """Run the detector on `count` random patch x patch windows of one grey image (smaller images: whole image)."""
    h, w = image.shape
    ph, pw = min(patch, h), min(patch, w)
    faces = 0
    for _ in range(count):
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        faces += bool(detector(image[y:y + ph, x:x + pw]))
    return Census(count, faces)


def allocate_patches(total: int, slots: int, seed: int) -> dict[int, int]:
    """Spread `total` census patches over `slots` samples at random: {slot: patches}, summing to `total`.

    Samples that turn out unreadable or duplicate take their patches with them, so the census reports
    the patches it actually examined.
    """
    if total <= 0 or slots <= 0:
        return {}
    chosen, counts = np.unique(np.random.default_rng([seed, 7]).integers(0, slots, total), return_counts=True)
    return dict(zip(chosen.tolist(), counts.tolist(), strict=True))
