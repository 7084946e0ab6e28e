"""The paper's baselines that are not the trained network: random guess and the best linear filter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from catneuron.model.network import standardize


def random_guess(labels: np.ndarray) -> float:
    """Accuracy of always answering the majority class ("never a face" at the paper's ratio)."""
    positives = float(np.mean(labels == 1))
    return max(positives, 1 - positives)


def sample_filters(batches: Iterable[torch.Tensor], count: int) -> torch.Tensor:
    """`count` training images, standardized and unit-normed: the candidate linear filters, (K, D)."""
    taken, filters = 0, []
    for batch in batches:
        flat = standardize(batch).reshape(len(batch), -1)
        filters.append(flat[: count - taken])
        taken += len(filters[-1])
        if taken >= count:
            break
    stacked = torch.cat(filters)
    return stacked / stacked.norm(dim=1, keepdim=True).clamp_min(1e-12)


def filter_responses(filters: torch.Tensor, images: np.ndarray, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """Cosine similarity of each standardized test image with each filter, (B, K) per batch."""
    for start in range(0, len(images), batch_size):
        batch = torch.as_tensor(np.asarray(images[start:start + batch_size], dtype=np.float32))
        flat = standardize(batch).reshape(len(batch), -1)
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        yield flat @ filters.T
