"""Training batch sources: where the trainer's unlabeled images come from.

A source yields float batches in [0, 1], (B, channels, size, size). Batches are a pure function of
(seed, step), so a resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from catneuron.data.images import ImageSet, read_folder
from catneuron.data.seeding import step_rng
from catneuron.errors import UserError

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    description: str

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]: ...


class ArraySource:
    """Images held in memory, visited in a fresh seeded permutation each epoch, randomly mirrored."""

    def __init__(self, images: np.ndarray, description: str, flip: bool = True) -> None:
        if len(images) == 0:
            raise UserError(f"{description}: no images to train on")
        self.images, self.description, self.flip = images, description, flip

    def __len__(self) -> int:
        """How many distinct images the batches cycle through."""
        return len(self.images)

    def batches(self, batch_size: int, seed: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        n = len(self.images)
        step = start_step
        while True:
            first = step * batch_size
            index = np.array([self._permutation(seed, (first + i) // n)[(first + i) % n]
                              for i in range(batch_size)])
            batch = self.images[index].astype(np.float32) / 255.0
            if self.flip:
                mirror = step_rng(seed, step, stream=1).random(batch_size) < 0.5
                batch[mirror] = batch[mirror][..., ::-1]
            yield torch.from_numpy(np.ascontiguousarray(batch))
            step += 1

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        cache = getattr(self, "_perm_cache", None)
        if cache is None or cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([seed, 2, epoch]).permutation(len(self.images)))
        return self._perm_cache[1]


def folder_source(root: str, size: int, channels: int) -> tuple[ArraySource, ImageSet]:
    found = read_folder(root, size, channels)
    return ArraySource(found.images, f"folder {root} ({len(found)} images)"), found


def absolute_spec(spec: str) -> str:
    """`--data` as a run records it: `embedded` as it is, a folder or shard pattern made absolute, so that
    `evaluate RUN` and `train --resume` find the data from any working folder."""
    return spec if spec == "embedded" else os.path.abspath(os.path.expanduser(spec))


def open_source(spec: str, size: int, channels: int) -> BatchSource:
    """`--data`: a folder of images, WebDataset shards (a brace pattern, a .tar, or a folder of .tar files,
    streamed), or `embedded` (further kinds register in this function)."""
    if spec == "embedded":
        from catneuron.data.embedded import EmbeddedCorpus

        return EmbeddedCorpus(size=size, channels=channels)
    from catneuron.data.shards import ShardSource, is_shard_spec

    if is_shard_spec(spec):
        return ShardSource.open(spec, size, channels)
    source, found = folder_source(spec, size, channels)
    for note in found.notes():
        log.info(f"catneuron: {spec}: {note}")
    return source
