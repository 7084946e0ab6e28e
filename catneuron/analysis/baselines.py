"""The paper's baselines that are not the trained network: chance (the majority class) and linear filters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from catneuron.model.network import standardize


def chance(labels: np.ndarray, concept: str) -> dict:
    """Always answering the majority class ("not faces" at the paper's ratio): its accuracy, and what it says."""
    positives = float(np.mean(labels == 1))
    majority = "positive" if positives > 0.5 else "negative"
    answer = concept if majority == "positive" else f"not {concept}"
    return {"id": f"always '{answer}'", "accuracy": max(positives, 1 - positives), "majority": majority}


def unit_rows(images: torch.Tensor) -> torch.Tensor:
    """Images (N, C, S, S) standardized, flattened and scaled to unit norm: dot products are cosines."""
    flat = standardize(images).reshape(len(images), -1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def filter_blocks(batches: Iterable[torch.Tensor], count: int, block: int) -> Iterator[torch.Tensor]:
    """The first `count` training images as candidate linear filters (unit rows), in blocks of `block` rows,
    so that no more than one block is ever held."""
    pending: list[torch.Tensor] = []
    held = taken = 0
    for batch in batches:
        rows = unit_rows(batch.float())[: count - taken]
        pending.append(rows)
        held += len(rows)
        taken += len(rows)
        while held >= block:
            stacked = torch.cat(pending)
            yield stacked[:block]
            pending, held = [stacked[block:]], held - block
        if taken >= count:
            break
    if held:
        yield torch.cat(pending)


def image_rows(images: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
    """Unit rows of test images (N, C, S, S) in [0, 1], computed in batches, (N, D)."""
    return torch.cat([unit_rows(torch.as_tensor(np.asarray(images[s:s + batch_size], dtype=np.float32)))
                      for s in range(0, len(images), batch_size)])
