"""Concept parsing, ratio subsampling, and the K-means baseline."""

import numpy as np
import pytest
import torch

from catneuron.analysis.concepts import parse_concepts, ratio_subsample
from catneuron.analysis.kmeans import fit_centroids, kmeans_record
from catneuron.data.labelled import LabelledImages
from catneuron.errors import UserError


def test_parse_concepts():
    assert parse_concepts(["faces=/a", "cats=/b"], "x") == [("faces", "/a"), ("cats", "/b")]
    assert parse_concepts(["/a"], "faces") == [("faces", "/a")]
    with pytest.raises(UserError, match="repeat"):
        parse_concepts(["/a", "/b"], "faces")


@pytest.mark.parametrize("n_pos,n_neg", [(1087, 2000), (500, 2000), (1087, 300), (7, 13), (2000, 2000)])
def test_ratio_subsample_keeps_the_reference_ratio(n_pos, n_neg):
    ratio = 23974 / 13026
    pos, neg = ratio_subsample(n_pos, n_neg, ratio, seed=1)
    p, q = len(pos), len(neg)
    assert q == round(p * ratio) and p <= n_pos and q <= n_neg
    assert p == n_pos or round((p + 1) * ratio) > n_neg  # as many as possible
    assert len(set(pos)) == p and len(set(neg)) == q and pos.max() < n_pos and neg.max() < n_neg
    again = ratio_subsample(n_pos, n_neg, ratio, seed=1)
    assert np.array_equal(pos, again[0]) and np.array_equal(neg, again[1])


def test_ratio_subsample_refuses_impossible_sets():
    with pytest.raises(UserError, match="too few"):
        ratio_subsample(5, 0, 1.8)


def test_kmeans_finds_the_cluster_of_the_concept():
    rng = np.random.default_rng(0)
    template = rng.normal(size=(1, 8, 8)).astype(np.float32)
    noise = rng.normal(size=(300, 1, 8, 8)).astype(np.float32)
    training = np.concatenate([template + 0.2 * noise[:100], noise[100:]])
    centroids = fit_centroids([torch.as_tensor(training)], 300, n_centroids=10, side=8)
    images = np.concatenate([template + 0.2 * rng.normal(size=(20, 1, 8, 8)), rng.normal(size=(40, 1, 8, 8))])
    record = kmeans_record(centroids, LabelledImages(images.astype(np.float32), np.array([1] * 20 + [0] * 40)), 8)
    assert record["accuracy"] == 1.0 and record["auc"] == 1.0 and record["n_centroids"] == 10
