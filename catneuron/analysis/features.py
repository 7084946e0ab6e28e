"""The top stage's output as a feature vector: what the paper's classifiers sit on, for any classifier.

`features(run, images)` is the entry point for scikit-learn users; `top_features` and
`batched_features` are shared with fine-tuning, so both see exactly the same vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from catneuron.data.images import list_images, read_images
from catneuron.errors import UserError
from catneuron.model.network import Network
from catneuron.store import runs


def top_features(network: Network, images: Tensor) -> Tensor:
    """(B, maps * side * side): the last stage's `norm`, flattened; differentiable through every stage."""
    return network(images, objective=False, detach=False)[-1].norm.flatten(1)


def as_float(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (0..255) or floats in [0, 1] -> a float32 tensor in [0, 1]."""
    batch = torch.as_tensor(images)
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


@torch.no_grad()
def batched_features(network: Network, images: np.ndarray | Tensor, batch_size: int = 256,
                     device: str | torch.device = "cpu") -> Tensor:
    """Top features of many images, a batch at a time (memory stays that of one batch), on the CPU."""
    was_training = network.training
    network.eval()
    out = [top_features(network, as_float(images[i:i + batch_size]).to(device)).cpu()
           for i in range(0, len(images), batch_size)]
    network.train(was_training)
    if not out:
        return torch.zeros(0, network.shapes[-1].maps * network.shapes[-1].pool_size ** 2)
    return torch.cat(out)


def _decode(paths: list[Path], size: int, channels: int) -> np.ndarray:
    found = read_images(paths, size, channels)
    if found.skipped:
        path, reason = found.skipped[0]
        raise UserError(f"images {path}: cannot be decoded ({reason}); {len(found.skipped)} file(s) unreadable")
    return found.images


def _load_images(images: str | Path | Sequence[str | Path] | np.ndarray | Tensor, size: int,
                 channels: int) -> np.ndarray | Tensor:
    if isinstance(images, (str, Path)):
        paths = list_images(images, flag="images")
        if not paths:
            raise UserError(f"images {images}: no image files there")
        return _decode(paths, size, channels)
    if isinstance(images, (np.ndarray, Tensor)):
        if images.ndim == 3 and channels == 1:
            images = images[:, None]
        if tuple(images.shape[1:]) != (channels, size, size):
            raise UserError(f"images: shape {tuple(images.shape)} does not fit the network, which takes "
                            f"(N, {channels}, {size}, {size}) in [0, 1]")
        return images
    return _decode([Path(p) for p in images], size, channels)


def features(run: str | Path, images: str | Path | Sequence[str | Path] | np.ndarray | Tensor,
             batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Top-stage features of a run's network, float32 (N, D), one row per image.

    `images`: a folder (rows in the sorted order of its image files, searched recursively), a list
    of image paths (rows in that order), or an array/tensor (N, C, S, S) in [0, 1] (uint8 0..255
    also accepted; (N, S, S) for a grey network). Files are centre-cropped and resized to the
    network's input, as in training. An unreadable file is an error, so rows never shift.
    """
    network, ckpt = runs.load_network(run, device)
    model = ckpt.config.model
    batch = _load_images(images, model.input_size, model.channels)
    return batched_features(network, batch, batch_size, device).numpy()
