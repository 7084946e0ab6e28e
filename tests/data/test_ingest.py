"""`catneuron ingest` on generated media: counts, one frame per video, duplicates, errors, faces, determinism,
parallel workers, resume after an interrupted run, and streaming the result into training."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from mediagen import make_broken, make_image, make_video
from PIL import Image

import catneuron.data.ingest as ingest_module
from catneuron.cli import main
from catneuron.data.ingest import ERRORS, STATS, Settings, collect_inputs, ingest
from catneuron.data.shards import MANIFEST
from catneuron.errors import UserError

SETTINGS = Settings(size=32, census=300, shard_files=5)


def white_is_a_face(grey: np.ndarray) -> list:
    """Stub detector: the corpus's all-white images are its 'faces'."""
    return [(0, 0, 5, 5)] if grey.min() >= 250 else []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_video(root / "videos" / "a.mp4", 1)
    make_video(root / "videos" / "b.avi", 2, codec="mpeg4")
    make_video(root / "videos" / "more" / "c.webm", 3, codec="libvpx")
    for i in range(20):
        make_image(root / "images" / f"img_{i:02d}.{'png' if i % 2 else 'jpg'}", i)
    shutil.copy(root / "images" / "img_03.png", root / "images" / "copy_of_03.png")
    Image.open(root / "images" / "img_05.png").save(root / "images" / "img_05_again.bmp")
    for i, level in enumerate((255, 252)):
        Image.new("RGB", (40, 40), (level,) * 3).save(root / "images" / f"face_{i}.png")
    broken = make_broken(root / "broken")
    return root, broken


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = ingest([str(corpus[0])], out, SETTINGS, workers=1, detector=white_is_a_face, progress=False)
    return out, result


def shard_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def read_samples(out) -> list[dict]:
    return list(wds.WebDataset(sorted(map(str, out.glob("*.tar"))), shardshuffle=False).decode("rgb"))


def test_counts_errors_and_duplicates(corpus, reference):
    root, broken = corpus
    out, result = reference
    s = result.stats
    assert (s["files"], s["videos"], s["images"]) == (32, 3, 24)
    assert (s["samples"], s["duplicates"], s["errors"], s["samples_with_faces"]) == (25, 2, 5, 2)
    assert s["complete"] and s["shards"] == 7 == len(list(out.glob("*.tar")))
    assert json.loads((out / STATS).read_text()) == s
    errors = dict(line.split("\t") for line in (out / ERRORS).read_text().splitlines())
    assert set(errors) == {str(p) for p in broken.values()}
    assert all(reason.strip() for reason in errors.values())
    assert "not an image or video" in errors[str(broken["text"])]
    assert errors[str(broken["empty"])] == "empty file"


def test_shards_hold_one_frame_per_video_readable_by_webdataset(corpus, reference):
    root, _ = corpus
    out, result = reference
    samples = read_samples(out)
    assert len(samples) == result.stats["samples"] == sum(m["samples"] for m in
                                                          json.loads((out / MANIFEST).read_text())["shards"])
    assert all(x["jpg"].shape == (32, 32, 3) for x in samples)
    sources = [x["json"]["source"] for x in samples]
    videos = [x["json"] for x in samples if x["json"]["frame_time"] is not None]
    assert sorted(v["source"] for v in videos) == sorted(str(p) for p in root.glob("videos/**/*.*"))
    assert all(0 <= v["frame_time"] < 2.0 and v["original_size"] == [64, 48] for v in videos)
    # of two identical files, the first in input order stays
    assert str(root / "images" / "copy_of_03.png") in sources and str(root / "images" / "img_03.png") not in sources
    assert str(root / "images" / "img_05_again.bmp") not in sources
    assert len({x["json"]["sha"] for x in samples}) == len(samples)
    assert 0 < result.stats["census"]["patches"] <= 300


def test_exclude_faces_drops_and_counts_them(corpus, tmp_path):
    settings = Settings(size=32, census=0, shard_files=5, exclude_faces=True)
    stats = ingest([str(corpus[0])], tmp_path, settings, detector=white_is_a_face, progress=False).stats
    assert (stats["samples"], stats["faces_excluded"]) == (23, 2)
    assert not any("face_" in x["json"]["source"] for x in read_samples(tmp_path))


def test_census_examines_exactly_n_patches_on_clean_input(corpus, tmp_path):
    images = sorted((corpus[0] / "images").glob("img_??.*"))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    stats = ingest([str(listing)], tmp_path / "out", Settings(size=64, census=123), detector=white_is_a_face,
                   progress=False).stats
    assert stats["samples"] == 20 and stats["census"]["patches"] == 123
    assert stats["census"]["faces"] == 0


def test_deterministic_in_parallel_and_seeded(corpus, reference, tmp_path):
    ingest([str(corpus[0])], tmp_path / "par", SETTINGS, workers=2, detector=white_is_a_face, progress=False)
    assert shard_bytes(tmp_path / "par") == shard_bytes(reference[0])
    reseeded = Settings(size=32, census=300, shard_files=5, seed=1)
    ingest([str(corpus[0] / "videos")], tmp_path / "seed1", reseeded, detector=white_is_a_face, progress=False)
    times = {x["json"]["source"]: x["json"]["frame_time"] for x in read_samples(tmp_path / "seed1")}
    before = {x["json"]["source"]: x["json"]["frame_time"] for x in read_samples(reference[0])}
    assert any(times[k] != before[k] for k in times)


def test_resume_after_an_interrupted_run_redoes_only_missing_shards(corpus, reference, tmp_path, monkeypatch):
    real_write, written = ingest_module.write_shard, []

    def dies_on_the_third(path, samples):
        if len(written) == 2:
            path.with_name(f".{path.name}.tmp-999").write_bytes(b"half a shard")  # what a kill leaves
            raise KeyboardInterrupt
        written.append(path.name)
        return real_write(path, samples)

    monkeypatch.setattr(ingest_module, "write_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        ingest([str(corpus[0])], tmp_path, SETTINGS, detector=white_is_a_face, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == written == ["shard-000000.tar", "shard-000001.tar"]
    assert not json.loads((tmp_path / STATS).read_text())["complete"]
    kept = {name: (tmp_path / name).stat().st_mtime_ns for name in written}

    result = ingest([str(corpus[0])], tmp_path, SETTINGS, detector=white_is_a_face, progress=False)
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in written} == kept
    assert not list(tmp_path.glob(".*tmp*"))
    assert shard_bytes(tmp_path) == shard_bytes(reference[0])
    assert (tmp_path / ERRORS).read_text() == (reference[0] / ERRORS).read_text()
    assert {k: v for k, v in result.stats.items() if k != "this_run"} == \
        {k: v for k, v in reference[1].stats.items() if k != "this_run"}

    again = ingest([str(corpus[0])], tmp_path, SETTINGS, detector=white_is_a_face, progress=False)
    assert again.stats["this_run"]["samples"] == 0
    with pytest.raises(UserError, match="--out .*size 32 -> 16"):
        ingest([str(corpus[0])], tmp_path, Settings(size=16, census=300, shard_files=5), progress=False)


KILLED_ON_THIRD_SHARD = """
import os, signal, sys
import catneuron.data.ingest as m
from catneuron.data.ingest import Settings, ingest
real, done = m.write_shard, []
def write(path, samples):
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    done.append(path)
    return real(path, samples)
def white_is_a_face(grey):
    return [(0, 0, 5, 5)] if grey.min() >= 250 else []
m.write_shard = write
ingest([sys.argv[1]], sys.argv[2], Settings(size=32, census=300, shard_files=5), workers=2, progress=False,
       detector=white_is_a_face)
"""


@pytest.mark.slow
def test_resume_after_sigkill_with_worker_processes(corpus, reference, tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILLED_ON_THIRD_SHARD, str(corpus[0]), str(tmp_path)])
    assert killed.returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob("*.tar"))) == 2
    ingest([str(corpus[0])], tmp_path, SETTINGS, detector=white_is_a_face, progress=False)
    assert shard_bytes(tmp_path) == shard_bytes(reference[0])


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="SRC .*nope: no such file or folder"):
        collect_inputs([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no files found"):
        collect_inputs([str(tmp_path / "empty")])
    with pytest.raises(UserError, match="--size 4"):
        Settings(size=4).check()


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["catneuron", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_cli_ingest_then_train_on_the_shards(corpus, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "ingest", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1 and "no such file or folder" in err

    shards = tmp_path / "shards"
    code, out, _ = run_cli(monkeypatch, capsys, "ingest", str(corpus[0] / "images"), "--out", str(shards),
                           "--size", "48", "--census", "40", "--workers", "1", "--shard-files", "10")
    assert code == 0 and "24 images" in out and "face census" in out and "shard-{000000..000002}.tar" in out

    code, out, _ = run_cli(monkeypatch, capsys, "train", "--data", str(shards / "shard-{000000..000002}.tar"),
                           "--preset", "tiny", "--steps", "2", "--out", str(tmp_path / "run"))
    assert code == 0 and "shards" in out
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()


def test_names_that_are_not_utf8_or_hold_control_codes_are_escaped(tmp_path, bomb_png):
    src = tmp_path / "src"
    src.mkdir()
    make_image(tmp_path / "good.png", 1).rename(os.fsdecode(bytes(src) + b"/caf\xe9.png"))
    Path(os.fsdecode(bytes(src) + b"/bad\xffname.jpg")).write_bytes(b"junk")
    (src / "evil\t\nname\x1b[31m.jpg").write_bytes(b"junk")
    bomb_png(src / "bomb.png")
    result = ingest([str(src)], tmp_path / "out", Settings(size=16, census=0, detect_faces=False), progress=False)
    assert result.stats["samples"] == 1 and result.stats["errors"] == 3
    rows = (tmp_path / "out" / ERRORS).read_text().splitlines()
    assert len(rows) == 3 and all(row.count("\t") == 1 for row in rows) and "\x1b" not in "".join(rows)
    names = sorted(row.split("\t")[0].rsplit("/", 1)[1] for row in rows)
    assert names == ["bad\\xffname.jpg", "bomb.png", "evil\\t\\nname\\x1b[31m.jpg"]
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["complete"]


def test_size_is_bounded_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"--size 100000: at most 2048"):
        ingest([str(tmp_path)], tmp_path / "out", Settings(size=100_000), progress=False)
