"""The demo's training step: the seed makes two honest replicates (other weights, other image order) scored on
the same test set, and the same seed gives the same network."""

import numpy as np
import torch

from catneuron.cli.demo import train_on_corpus
from catneuron.model import config as configs
from catneuron.store import checkpoint, runs


def trained(tmp_path, name: str, seed: int, precision: str = "float32"):
    cfg = configs.replace(configs.preset("tiny"), train={"seed": seed, "precision": precision})
    corpus = train_on_corpus(cfg, tmp_path / name, steps=3, minutes=1000, device=torch.device("cpu"))
    return checkpoint.load(runs.checkpoint_path(tmp_path / name)), corpus.test_set()


def test_two_seeds_are_two_replicates_on_one_test_set(tmp_path):
    first, test = trained(tmp_path, "a", seed=0)
    again, test_again = trained(tmp_path, "b", seed=0)
    other, test_other = trained(tmp_path, "c", seed=1)
    assert first.step == again.step == other.step == 3
    assert first.model.keys() == other.model.keys()
    for name, weights in first.model.items():
        assert torch.equal(weights, again.model[name]), name
        assert not torch.equal(weights, other.model[name]), name
    for images, labels in ((test_again.images, test_again.labels), (test_other.images, test_other.labels)):
        assert np.array_equal(images, test.images) and np.array_equal(labels, test.labels)


def test_precision_reaches_the_run_and_the_weights_stay_float32(tmp_path):
    run, _ = trained(tmp_path, "bf16", seed=0, precision="bf16")
    assert run.config.train.precision == "bf16"
    reference, _ = trained(tmp_path, "float32", seed=0)
    for name, weights in run.model.items():
        assert weights.dtype == torch.float32, name
        change = float((weights - reference.model[name]).norm() / reference.model[name].norm())
        assert 0 < change < 0.1, name  # bf16 operands change the steps a little (measured: 2-4% after 3 steps)
