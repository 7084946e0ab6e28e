"""Shards: atomic, reproducible, readable by plain webdataset; the streaming source's split, batches and errors."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from catneuron.data.shards import (
    MANIFEST,
    Sample,
    ShardSource,
    assignment,
    decode,
    list_shards,
    shard_images,
    write_shard,
)
from catneuron.data.sources import ArraySource, open_source
from catneuron.errors import UserError


def grey_jpeg(level: int, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (level, level, level)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def make_corpus(folder, shards: int, per_shard: int) -> list[int]:
    """Shards of flat grey images whose level names the sample; returns the levels."""
    levels = []
    for s in range(shards):
        samples = []
        for i in range(per_shard):
            level = 4 + 6 * len(levels)
            levels.append(level)
            samples.append(Sample(f"{s:03d}_{i:03d}", grey_jpeg(level), {"level": level}))
        write_shard(folder / f"shard-{s:06d}.tar", samples)
    return levels


def test_shards_are_reproducible_and_readable_by_webdataset(tmp_path):
    samples = [Sample(f"k{i}", grey_jpeg(10 * i), {"i": i}) for i in range(5)]
    write_shard(tmp_path / "a.tar", samples)
    write_shard(tmp_path / "b.tar", samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert not list(tmp_path.glob("*tmp*"))
    read = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False).decode("rgb"))
    assert [r["__key__"] for r in read] == [f"k{i}" for i in range(5)]
    assert [r["json"]["i"] for r in read] == list(range(5))
    assert read[2]["jpg"].shape == (24, 24, 3)
    assert [name for name, _ in shard_images(tmp_path / "a.tar")] == [f"k{i}.jpg" for i in range(5)]


def test_truncated_shard_ends_early_with_a_warning(tmp_path, caplog):
    write_shard(tmp_path / "a.tar", [Sample(f"k{i}", grey_jpeg(i), {}) for i in range(6)])
    data = (tmp_path / "a.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        cut = tar.getmembers()[8].offset_data + 100  # inside the fifth image
    (tmp_path / "cut.tar").write_bytes(data[:cut])
    assert 0 < len(list(shard_images(tmp_path / "cut.tar"))) < 6
    assert any(r.levelno == logging.WARNING and "cut.tar" in r.getMessage() for r in caplog.records)


def test_decode_scales_to_the_model_input():
    assert decode(grey_jpeg(200, size=64), 16, 1).shape == (1, 16, 16)
    assert decode(grey_jpeg(200, size=64), 8, 3).shape == (3, 8, 8)


@pytest.mark.parametrize(("shards", "replicas", "workers"), [(12, 2, 3), (7, 3, 2), (2, 2, 2), (1, 1, 4)])
def test_assignment_partitions_shards_and_samples(shards, replicas, workers):
    per_shard = 5
    owners: dict[tuple[int, int], int] = {}
    for r in range(replicas):
        for w in range(workers):
            part, stride, offset = assignment(shards, r, replicas, w, workers)
            for s in list(range(shards))[part]:
                for n in range(per_shard):
                    if n % stride == offset:
                        assert (s, n) not in owners
                        owners[(s, n)] = r
    assert len(owners) == shards * per_shard


def test_list_shards_patterns_and_errors(tmp_path):
    make_corpus(tmp_path, 3, 2)
    assert len(list_shards(str(tmp_path / "shard-{000000..000002}.tar"))) == 3
    assert list_shards(str(tmp_path)) == sorted(tmp_path.glob("*.tar"))
    with pytest.raises(UserError, match=r"shard-000003.tar not found \(and 1 more\)"):
        list_shards(str(tmp_path / "shard-{000000..000004}.tar"))


def epoch_levels(source: ShardSource, n: int, seed: int = 0) -> list[int]:
    batches = source.batches(n, seed)
    batch = next(batches)
    batches.close()
    return sorted(int(round(float(v) * 255)) for v in batch.mean(dim=(1, 2, 3)))


def test_replicas_read_disjoint_shares_of_the_corpus(tmp_path):
    levels = make_corpus(tmp_path, 4, 5)
    halves = [epoch_levels(ShardSource(list_shards(str(tmp_path)), 8, 1, workers=0, buffer=1, flip=False,
                                       replica=r, num_replicas=2), 10) for r in range(2)]
    for half in halves:
        assert len(half) == 10
    seen = sorted(halves[0] + halves[1])
    assert all(abs(a - b) <= 2 for a, b in zip(seen, levels, strict=True))  # JPEG moves a level by a step at most


def test_source_batches_with_loader_workers(tmp_path):
    make_corpus(tmp_path, 3, 4)
    source = open_source(str(tmp_path / "shard-{000000..000002}.tar"), 16, 1)
    assert isinstance(source, ShardSource) and "3 shards" in source.description
    source.workers = 2
    batches = source.batches(5, seed=1)
    for _ in range(4):  # more than one epoch of 12 samples
        batch = next(batches)
        assert batch.shape == (5, 1, 16, 16) and batch.dtype == torch.float32
        assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    batches.close()


def test_start_step_reseeds_the_stream(tmp_path):
    make_corpus(tmp_path, 4, 6)
    source = ShardSource(list_shards(str(tmp_path)), 8, 1, workers=0, buffer=6)
    first = next(source.batches(6, seed=0))
    assert torch.equal(first, next(source.batches(6, seed=0)))
    assert not torch.equal(first, next(source.batches(6, seed=0, start_step=100)))


def test_manifest_counts_and_empty_corpus(tmp_path):
    make_corpus(tmp_path, 2, 3)
    write_shard(tmp_path / "shard-000002.tar", [])
    names = [f"shard-{i:06d}.tar" for i in range(3)]
    (tmp_path / MANIFEST).write_text(json.dumps({"shards": [{"name": n, "samples": c}
                                                            for n, c in zip(names, (3, 3, 0), strict=True)]}))
    source = ShardSource.open(str(tmp_path), 8, 1)
    assert len(source.shards) == 2 and "6 samples" in source.description
    (tmp_path / MANIFEST).write_text(json.dumps({"shards": [{"name": n, "samples": 0} for n in names]}))
    with pytest.raises(UserError, match="no samples"):
        ShardSource.open(str(tmp_path), 8, 1)
    empty = ShardSource([tmp_path / "shard-000002.tar"], 8, 1, workers=0)
    with pytest.raises(UserError, match="no readable images"):
        next(empty.batches(2, 0))


def test_a_folder_of_images_is_still_a_folder_source(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    assert isinstance(open_source(str(tmp_path), 16, 1), ArraySource)


@pytest.mark.parametrize("cache_mb", [0, 1])
def test_later_epochs_replay_the_same_samples_streamed_or_cached(tmp_path, cache_mb):
    make_corpus(tmp_path, 2, 4)
    source = ShardSource(list_shards(str(tmp_path)), 8, 1, workers=0, buffer=1, flip=False, cache_mb=cache_mb)
    batches = source.batches(8, seed=0)
    epochs = [next(batches).mean(dim=(1, 2, 3)) for _ in range(3)]
    assert all(torch.equal(e.sort().values, epochs[0].sort().values) for e in epochs)
    assert not all(torch.equal(e, epochs[0]) for e in epochs[1:])  # reshuffled


def test_a_corpus_that_cannot_feed_every_replica_is_refused_before_they_start(tmp_path):
    """1 image among empty files: ingest leaves one sample in one shard, which one replica reads and a second
    never would (it died 3 times under Downpour); the manifest's counts refuse it up front, a larger corpus not."""
    from catneuron.data.ingest import Settings, ingest

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (40, 40), (90, 120, 30)).save(inputs / "one.png")
    for i in range(5):
        (inputs / f"empty{i}.jpg").write_bytes(b"")
    ingest([str(inputs)], tmp_path / "out", Settings(size=16, census=0, detect_faces=False, shard_files=2),
           progress=False)
    source = ShardSource.open(str(tmp_path / "out"), 8, 1)
    assert source.sizes == [1]
    source.check_replicas(1)
    with pytest.raises(UserError, match=r"--replicas 2: shards .* feed\(s\) at most 1 replica\(s\)"):
        source.check_replicas(2)
    make_corpus(tmp_path / "more", 3, 2)
    (tmp_path / "more" / MANIFEST).write_text(json.dumps({"shards": [{"name": f"shard-{i:06d}.tar", "samples": 2}
                                                                     for i in range(3)]}))
    ShardSource.open(str(tmp_path / "more"), 8, 1).check_replicas(2)  # every replica reads one of each pair
    with pytest.raises(UserError, match="at most 2 replica"):
        ShardSource.open(str(tmp_path / "more"), 8, 1).check_replicas(3)
