"""Which layers make a good default for `catneuron.features`: a logistic regression per layer choice.

    python experiments/feature_layers.py RUN

RUN is a run of the `small` preset (e.g. from `catneuron demo`). Faces against the other images of the
embedded corpus's held-out test set, 5-fold stratified cross-validation, standardized features, L2
penalty C = 0.1; printed beside the majority-class rate (always answering "not a face").
"""

from __future__ import annotations

import argparse
import time

from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import catneuron
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.store import runs

CHOICES = ["s3.norm", "s2.norm", "s1.norm", ["s2.norm", "s3.norm"], None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    run = parser.parse_args().run
    _, ckpt = runs.load_network(run)
    model = ckpt.config.model
    test = EmbeddedCorpus(size=model.input_size, channels=model.channels).test_set()
    y = test.labels
    print(f"{len(y)} test images, {y.mean():.1%} faces; majority class {max(y.mean(), 1 - y.mean()):.1%}")
    for layer in CHOICES:
        start = time.monotonic()
        x = catneuron.features(run, test.images, layer=layer)
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        accuracy = cross_val_score(classifier, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
        name = "default (every stage's norm)" if layer is None else layer
        print(f"{name!s:>30}: {x.shape[1]:5d} features, accuracy {accuracy:.1%} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
