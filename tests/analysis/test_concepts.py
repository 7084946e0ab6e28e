"""Concept parsing, ratio subsampling, and the K-means baseline."""

import shutil

import numpy as np
import pytest
import torch

from catneuron.analysis.concepts import concept_sets, parse_concepts, ratio_subsample
from catneuron.analysis.emergence import watch_sets
from catneuron.analysis.kmeans import fit_centroids, kmeans_record
from catneuron.data.embedded import PAPER_POSITIVE_FRACTION
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


def test_sets_that_cannot_mean_anything_are_refused(image_folder, tmp_path):
    """A class of fewer than 2 images after subsampling has no held-out half to score; the refusal names the
    counts, and a subsample that drops most of a class is said."""
    pos, neg, two, one = (image_folder(tmp_path / "pos", 40, 1), image_folder(tmp_path / "neg", 20, 2),
                          image_folder(tmp_path / "two", 2, 3), image_folder(tmp_path / "one", 1, 4))
    with pytest.raises(UserError, match=r"40 of 40 positives and 0 of 20 negatives \(subsampled to "
                                        r"--positive-fraction 0.999\); each class needs at least 2"):
        concept_sets([("faces", str(pos))], str(neg), 16, 1, positive_fraction=0.999)
    with pytest.raises(UserError, match="1 of 40 positives and 2 of 2 negatives"):
        concept_sets([("faces", str(pos))], str(two), 16, 1, positive_fraction=PAPER_POSITIVE_FRACTION)
    with pytest.raises(UserError, match="--watch: concept 'faces': 1 of 1 positives"):
        watch_sets([("faces", str(one))], str(neg), 16, 1, say=lambda _: None)
    said = []
    [(_, kept)] = concept_sets([("faces", str(pos))], str(neg), 16, 1, positive_fraction=0.9, say=said.append)
    assert (int(kept.labels.sum()), int((kept.labels == 0).sum())) == (40, 4)
    assert said == ["catneuron: concept 'faces': keeping 40 of 40 positives and 4 of 20 negatives (subsampled to "
                    "--positive-fraction 0.9)"]


def test_overlapping_positives_and_negatives_are_refused(image_folder, tmp_path):
    """The same folder twice, or one file copied under another name: the sets overlap, whatever the names."""
    pos, neg = image_folder(tmp_path / "pos", 6, 1), image_folder(tmp_path / "neg", 8, 2)
    with pytest.raises(UserError, match=r"6 image\(s\) of concept 'faces' are also distractors"):
        concept_sets([("faces", str(pos))], str(pos), 16, 1)
    shutil.copy(pos / "3.png", neg / "renamed.png")
    with pytest.raises(UserError, match=rf"1 image\(s\) of concept 'cats' are also distractors \(e.g. "
                                        rf"{pos / '3.png'} = {neg / 'renamed.png'}\)"):
        concept_sets([("cats", str(pos))], str(neg), 16, 1)
    with pytest.raises(UserError, match="--watch: --positives"):
        watch_sets([("faces", str(pos))], str(neg), 16, 1, say=lambda _: None)
    (neg / "renamed.png").unlink()
    assert len(concept_sets([("faces", str(pos))], str(neg), 16, 1)[0][1].labels) == 14
