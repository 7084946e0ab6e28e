"""Hostile but fair input to every command: one line, exit 1 or 2, never a traceback, and found before the work.

Output locations that cannot be written (under a regular file, in /proc), numbers out of range, flags that
--resume would ignore, concepts whose file names collide; `test_no_error_path_prints_a_traceback` runs
them all, and more, through the real entry point.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from clirun import run
from PIL import Image

from catneuron.cli import checks
from catneuron.data.sources import ArraySource
from catneuron.model.config import PRESETS, replace
from catneuron.store import runs
from catneuron.train.trainer import Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained tiny run, image folders, a labelled tree, and a regular file to put outputs under."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    for folder, count in (("data", 12), ("pos", 6), ("neg", 12), ("labelled/a", 4), ("labelled/b", 4)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    config = replace(PRESETS["tiny"], train={"batch_size": 4, "log_every": 1})
    source = ArraySource(rng.integers(0, 255, (12, 1, 16, 16), dtype=np.uint8), "random")
    Trainer(config, source, root / "run", data_spec=str(root / "data")).fit(2, progress=False)
    (root / "file").write_text("a regular file, not a folder")
    return root


def blocked_run(world, tmp_path):
    """A copy of the run whose results/ is a regular file: nothing can be written there."""
    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    shutil.rmtree(run / "results", ignore_errors=True)
    (run / "results").write_text("not a folder")
    return run


def test_outputs_under_a_regular_file_are_refused_before_the_work(monkeypatch, capsys, world, tmp_path):
    w, blocked = world, world / "file" / "out"
    cases = [
        (["train", "--data", w / "data", "--preset", "tiny", "--steps", "1", "--out", blocked], "--out"),
        (["train", "--data", "embedded", "--preset", "tiny", "--out", "/proc/catneuron-test"], "--out"),
        (["evaluate", w / "run", "--positives", w / "pos", "--negatives", w / "neg", "--json", blocked / "r.json"],
         "--json"),
        (["report", w / "run", "--out", blocked], "--out"),
        (["ingest", w / "data", "--out", blocked, "--census", "0"], "--out"),
        (["finetune", w / "run", "--train", w / "labelled", "--epochs", "1", "--out", blocked], "--out"),
        (["table", "--data", "embedded", "--positives", f"f={w / 'pos'}", "--negatives", w / "neg", "--out",
          blocked], "--out"),
    ]
    for args, flag in cases:
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 2 and err.startswith(f"catneuron: error: {flag} ") and "cannot write there" in err, (args, err)
        assert err.count("\n") == 1 and out == "", (args, out)  # nothing started: no progress, no scan
    run_folder = blocked_run(world, tmp_path)
    for args in (["evaluate", run_folder, "--positives", w / "pos", "--negatives", w / "neg"],
                 ["visualize", run_folder, "--neuron", "s1.pool.m0.y0.x0", "--steps", "1"],
                 ["invariance", run_folder, "--neuron", "s1.pool.m0.y0.x0", "--images", w / "pos"]):
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 2 and f"RUN {run_folder / 'results'}: cannot write there" in err and out == "", (args, err)


@pytest.mark.parametrize("args,message", [
    (["evaluate", "{run}", "--positives", "{w}/pos", "--negatives", "{w}/neg", "--linear-filters", "0"],
     "--linear-filters 0: must be at least 1"),
    (["evaluate", "{run}", "--positives", "{w}/pos", "--negatives", "{w}/neg", "--linear-filters", "-5"],
     "--linear-filters -5: must be at least 1"),
    (["table", "--data", "embedded", "--positives", "f={w}/pos", "--negatives", "{w}/neg", "--centroids", "0"],
     "--centroids 0: must be at least 1"),
    (["table", "--data", "embedded", "--positives", "f={w}/pos", "--negatives", "{w}/neg", "--control-data",
      "/no/such/corpus"], "--control-data /no/such/corpus: no such file or folder"),
    (["train", "--data", "embedded", "--preset", "tiny", "--minutes", "0"], "--minutes 0.0: must be a positive"),
    (["train", "--data", "embedded", "--preset", "tiny", "--minutes", "nan"], "--minutes nan: must be a positive"),
    (["train", "--data", "embedded", "--preset", "tiny", "--minutes", "-1"], "--minutes -1.0: must be a positive"),
    (["train", "--data", "embedded", "--preset", "tiny", "--steps", "0"], "--steps 0: must be at least 1"),
    (["train", "--data", "embedded", "--preset", "tiny", "--lr", "nan"], "train.lr must be a positive number"),
    (["train", "--data", "{w}/data", "--resume", "--out", "{run}", "--preset", "tiny"], "--preset with --resume"),
    (["train", "--data", "{w}/data", "--resume", "--out", "{run}", "--lr", "0.5"], "--lr with --resume"),
    (["train", "--data", "{w}/pos", "--resume", "--out", "{run}"], "resume it on the same data"),
    (["finetune", "{run}", "--train", "{w}/labelled", "--split", "1.5"], "--split 1.5: must be between 0 and 1"),
    (["evaluate", "{run}", "--positives", "a b={w}/pos", "--positives", "a_b={w}/pos", "--negatives", "{w}/neg"],
     "concepts 'a b' and 'a_b' would share the results file a_b.json"),
    (["ingest", "{w}/data", "--out", "{w}/never", "--size", "100000"], "--size 100000: at most 2048"),
])
def test_bad_numbers_and_flags_are_refused_before_any_work(monkeypatch, capsys, world, args, message):
    args = [a.format(w=world, run=world / "run") for a in args]
    code, out, err = run(monkeypatch, capsys, *args, *(["--out", world / "new"] if "--out" not in args
                                                         and args[0] in ("train", "table") else []))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert out == "" and not (world / "new" / runs.METRICS).exists()


def test_a_concept_whose_file_name_holds_another_concept_is_refused(monkeypatch, capsys, world, tmp_path):
    run_folder = tmp_path / "run"
    shutil.copytree(world / "run", run_folder)
    (run_folder / "results").mkdir(exist_ok=True)
    (run_folder / "results" / "a_b.json").write_text('{"concept": "a b"}')
    code, _, err = run(monkeypatch, capsys, "evaluate", run_folder, "--positives", f"a_b={world / 'pos'}",
                       "--negatives", world / "neg")
    assert code == 2 and "holds the results of concept 'a b'" in err


def test_no_error_path_prints_a_traceback(monkeypatch, capsys, world, tmp_path, bomb_png):
    """Every command on missing, damaged and hostile inputs: exit 1 or 2 and one line, never 'Traceback'."""
    w, r = world, world / "run"
    cut = tmp_path / "cut"
    shutil.copytree(r, cut)
    data = runs.checkpoint_path(cut).read_bytes()
    runs.checkpoint_path(cut).write_bytes(data[: len(data) // 2])
    bomb = bomb_png(tmp_path / "bomb.png")
    (tmp_path / "bad.yaml").write_text("model: {input_size: 100000000}\n")
    commands = [
        ["info", "--preset", "nope"], ["info", "--config", tmp_path / "bad.yaml"],
        ["train", "--data", "/no/such", "--preset", "tiny", "--out", tmp_path / "t1"],
        ["train", "--data", bomb, "--preset", "tiny", "--out", tmp_path / "t2"],
        ["train", "--data", "embedded", "--config", tmp_path / "bad.yaml", "--out", tmp_path / "t3"],
        ["train", "--data", w / "data", "--resume", "--out", cut],
        ["train", "--data", w / "data", "--preset", "tiny", "--replicas", "0", "--out", tmp_path / "t4"],
        ["train", "--data", w / "data", "--preset", "tiny", "--replicas", "13", "--out", tmp_path / "t5"],
        ["train", "--data", "embedded", "--preset", "tiny", "--device", "tpu", "--out", tmp_path / "t6"],
        ["evaluate", cut, "--positives", w / "pos", "--negatives", w / "neg"],
        ["evaluate", r, "--positives", "/no/pos", "--negatives", w / "neg"],
        ["evaluate", r, "--positives", bomb, "--negatives", w / "neg"],
        ["visualize", r, "--neuron", "s9.pool.m0.y0.x0"], ["visualize", r, "--concept", "nothing"],
        ["visualize", cut, "--neuron", "s1.pool.m0.y0.x0"],
        ["invariance", r, "--neuron", "bogus", "--images", w / "pos"],
        ["invariance", r, "--neuron", "s1.pool.m0.y0.x0", "--images", w / "pos", "--n", "0"],
        ["report", "/no/run"], ["report", w / "file"],
        ["ingest", "/no/src", "--out", tmp_path / "i1"],
        ["ingest", w / "data", "--out", tmp_path / "i2", "--size", "0"],
        ["ingest", w / "data", "--out", tmp_path / "i3", "--workers", "0"],
        ["finetune", r, "--train", "/no/train"], ["finetune", r, "--train", w / "labelled", "--epochs", "0"],
        ["finetune", cut, "--train", w / "labelled"],
        ["table", "--data", "/no/data", "--positives", f"f={w / 'pos'}", "--negatives", w / "neg"],
        ["demo", "--minutes", "-3"], ["demo", "--out", w / "file" / "x"],
    ]
    for args in commands:
        code, out, err = run(monkeypatch, capsys, *args)
        assert code in (1, 2), (args, code, err)
        assert "Traceback" not in out + err, (args, err)
        assert err.count("\n") == 1 and err.startswith("catneuron: error: "), (args, err)


def test_a_network_that_is_not_finite_is_not_evaluated(monkeypatch, capsys, world, tmp_path):
    from catneuron.store import checkpoint

    ckpt = checkpoint.load(runs.checkpoint_path(world / "run"))
    net, _ = runs.load_network(world / "run")
    with torch.no_grad():
        next(net.parameters())[0] = float("nan")
    checkpoint.save(runs.checkpoint_path(tmp_path / "nan"), ckpt.config, ckpt.step, net)
    code, out, err = run(monkeypatch, capsys, "evaluate", tmp_path / "nan", "--positives", world / "pos",
                         "--negatives", world / "neg")
    assert code == 2 and "weights are not finite (NaN or infinity in" in err and "Table" not in out


def test_a_folder_check_leaves_alone_the_probe_of_another_process_with_its_id(tmp_path, monkeypatch):
    """torchrun ranks on two nodes of a shared filesystem may have the same process id and check --out at the same
    time: neither takes over, empties or removes a file the other made, whatever its name."""
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    other = tmp_path / ".catneuron-probe-4242"
    other.write_bytes(b"another node's")
    assert checks.writable_folder(tmp_path, "--out") == tmp_path
    assert list(tmp_path.iterdir()) == [other] and other.read_bytes() == b"another node's"


def test_names_and_outputs_that_are_not_utf8_are_refused_before_anything_is_written(monkeypatch, capsys, world,
                                                                                    tmp_path):
    """A byte that is not UTF-8 reaches Python as a surrogate: a concept or watch name with one was a matplotlib
    TypeError, or a UnicodeEncodeError in the watch's fingerprint after config.json was written; an --out with
    one was written by train and then refused by evaluate and --resume."""
    w, bad = world, "fa\udcffces"
    cases = [
        (["evaluate", w / "run", "--positives", f"{bad}={w / 'pos'}", "--negatives", w / "neg"],
         "--positives: the concept name 'fa\\udcffces' is not valid UTF-8"),
        (["evaluate", w / "run", "--positives", w / "pos", "--concept", bad, "--negatives", w / "neg"],
         "is not valid UTF-8"),
        (["train", "--data", w / "data", "--preset", "tiny", "--steps", "1", "--out", tmp_path / "watched",
          "--watch", f"{bad}={w / 'pos'}", "--watch-negatives", w / "neg"],
         "--watch: the concept name 'fa\\udcffces' is not valid UTF-8"),
        (["train", "--data", w / "data", "--preset", "tiny", "--steps", "1", "--out", tmp_path / f"run-{bad}"],
         "the name is not valid UTF-8; choose another"),
    ]
    for args, message in cases:
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert list(tmp_path.iterdir()) == []  # nothing written: an --out made to check it is removed on refusal


def test_weights_far_too_large_are_one_line(monkeypatch, capsys, world, tmp_path):
    """Finite weights x1e30 with a valid checksum: the activations overflow, and the selectivity's bincount raised
    a ValueError on the NaN bins."""
    from catneuron.store import checkpoint

    shutil.copytree(world / "run", tmp_path / "huge")
    ckpt = checkpoint.load(runs.checkpoint_path(world / "run"))
    net, _ = runs.load_network(world / "run")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1e30)
    checkpoint.save(runs.checkpoint_path(tmp_path / "huge"), ckpt.config, ckpt.step, net, extra=ckpt.extra)
    code, out, err = run(monkeypatch, capsys, "evaluate", tmp_path / "huge", "--positives", world / "pos",
                         "--negatives", world / "neg", "--linear-filters", "5")
    last = err.splitlines()[-1]  # after the scan's progress lines
    assert code == 2 and last.startswith("catneuron: error: the network's activations are not finite numbers")
    assert "Traceback" not in err and "Table" not in out


def test_a_nan_checkpoint_is_not_resumed(monkeypatch, capsys, world, tmp_path):
    """A NaN weight was trained a step on resume, and the run then misreported the last finite step."""
    from catneuron.store import checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(world / "run", run_dir)
    ckpt = checkpoint.load(runs.checkpoint_path(run_dir))
    net, _ = runs.load_network(run_dir)
    with torch.no_grad():
        next(net.parameters())[0] = float("nan")
    checkpoint.save(runs.checkpoint_path(run_dir), ckpt.config, ckpt.step, net, extra=ckpt.extra)
    before = (run_dir / runs.METRICS).read_text()
    code, _, err = run(monkeypatch, capsys, "train", "--resume", "--out", run_dir, "--steps", "4")
    assert code == 2 and "weights are not finite (NaN or infinity in model." in err and err.count("\n") == 1
    assert (run_dir / runs.METRICS).read_text() == before and checkpoint.load(runs.checkpoint_path(run_dir)).step == 2


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "embedded", "--steps", str(10**23), "--minutes", "0.05"],
     f"--steps {10**23}: at most 1,000,000,000 steps"),
    (["train", "--data", "embedded", "--watch-minutes", "nan", "--watch", "a", "--watch-negatives", "b"],
     "--watch-minutes nan: must be a positive number"),
    (["evaluate", "/no/run", "--positives", "a", "--negatives", "b", "--null-seeds", "1000"],
     "--null-seeds 1000: 0 (none) or 2 to 100"),
])
def test_numbers_out_of_bounds(monkeypatch, capsys, tmp_path, args, message):
    """--steps 1e23 trained with an ETA of `733700761520973778:29:20`; --watch-minutes nan wrote NaN into
    metrics.jsonl; --null-seeds had no bound."""
    code, _, err = run(monkeypatch, capsys, *args, *(["--out", tmp_path / "out"] if args[0] == "train" else []))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / runs.CONFIG).exists()
