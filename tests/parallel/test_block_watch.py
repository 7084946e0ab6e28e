"""--watch under --partitions: rank 0 scans the network gathered from the blocks at the single-process watch points,
and the records are the single-process trainer's."""

from __future__ import annotations

import pytest

from catneuron.analysis.emergence import subsample, watch_records
from catneuron.data.embedded import EmbeddedCorpus
from catneuron.model.config import PRESETS
from catneuron.parallel.trainer import ModelParallel
from catneuron.store import checkpoint, runs
from catneuron.train.trainer import Trainer
from catneuron.train.watch import Watch, WatchOptions, best_checkpoint_path

pytestmark = pytest.mark.slow  # spawned ranks: each imports torch


def test_rank_0_watches_the_gathered_network_as_the_single_process_trainer_does(tmp_path):
    corpus = EmbeddedCorpus(size=16)
    sets = [("faces", subsample(corpus.test_set(), 80))]
    options = WatchOptions(every_images=40, budget=1.0, n_filters=200)
    single = Trainer(PRESETS["tiny"], corpus, tmp_path / "single", data_spec="embedded")
    single.watch = Watch(sets, options, say=print)
    single.fit(5, progress=False)  # batches of 20: 100 images
    blocks = ModelParallel(PRESETS["tiny"], "embedded", tmp_path / "blocks", (1, 2), threads=1, resume=False,
                           watch=Watch(sets, options, say=print))
    assert blocks.fit(5).step == 5

    mine, theirs = (watch_records(runs.read_rows(tmp_path / run)) for run in ("blocks", "single"))
    assert [(r["images"], r["step"]) for r in mine] == [(0, 0), (40, 2), (80, 4), (100, 5)]
    for a, b in zip(mine, theirs, strict=True):
        assert a["concepts"]["faces"]["upper_heldout"] == pytest.approx(b["concepts"]["faces"]["upper_heldout"])
    best = checkpoint.load(best_checkpoint_path(tmp_path / "blocks"))
    assert best.extra["watch"]["concepts"]["faces"]["upper_heldout"] == max(
        r["concepts"]["faces"]["upper_heldout"] for r in mine if r["images"] > 0)  # trained points only
