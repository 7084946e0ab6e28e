"""The K-means baseline: centroids of downsampled training images, their similarities used as neurons."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from sklearn.cluster import MiniBatchKMeans

from catneuron.analysis.evaluate import scan_linear
from catneuron.analysis.selectivity import Layout
from catneuron.data.labelled import LabelledImages
from catneuron.model.network import standardize


def downsampled(images: torch.Tensor, side: int) -> torch.Tensor:
    """Standardized, resized to side x side, unit-normed rows (N, C*side*side)."""
    small = F.interpolate(images, size=(side, side), mode="area") if images.shape[-1] != side else images
    flat = standardize(small).reshape(len(images), -1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def fit_centroids(batches: Iterable[torch.Tensor], n_images: int, n_centroids: int, side: int, seed: int = 0
                  ) -> torch.Tensor:
    """MiniBatchKMeans on `n_images` training images; returns unit-normed centroids (K, D)."""
    rows, taken = [], 0
    for batch in batches:
        rows.append(downsampled(batch, side))
        taken += len(batch)
        if taken >= n_images:
            break
    data = torch.cat(rows)[:n_images].numpy()
    k = min(n_centroids, len(data))
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=max(1024, 3 * k), n_init=1).fit(data)
    centroids = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)
    return centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)


def kmeans_record(centroids: torch.Tensor, test: LabelledImages, side: int, seed: int = 0) -> dict:
    """The best centroid as a detector, scanned with the paper's protocol and the held-out one."""
    rows = torch.cat([downsampled(torch.as_tensor(test.images[s:s + 512]), side)
                      for s in range(0, len(test.labels), 512)])
    layout = Layout(test.labels, seed)
    leader, _ = scan_linear([centroids], rows, layout, len(centroids), "k-means", progress=False)
    return leader.record("centroid", n_centroids=len(centroids), side=side)
