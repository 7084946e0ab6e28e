"""`catneuron train` as a scheduler runs it: preempted by SIGTERM and requeued, limited by time alone, and
refused as a second writer of a run folder; --set, the run folder's provenance and event files, no empty --out
after a refusal."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from clirun import run

from catneuron.model.config import PRESETS
from catneuron.store import checkpoint, runs
from catneuron.train.loop import TrainResult
from catneuron.train.trainer import Trainer

ENTRY = [sys.executable, "-c", "from catneuron.cli import main; main()", "train"]
ENV = os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*ENTRY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)


def wait_for_rows(process: subprocess.Popen, run: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not runs.read_metrics(run) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert runs.read_metrics(run), process.communicate()[1].decode()[-2000:]


@pytest.mark.slow
def test_sigterm_saves_and_the_requeued_command_continues_the_run(tmp_path):
    """What Slurm does to a preempted job: SIGTERM, then the same command again. The first saves the step it
    stopped at and exits 143 with the resume command; the rerun (--auto-resume) continues from that step."""
    out = tmp_path / "run"
    command = ["--data", "embedded", "--preset", "tiny", "--out", str(out), "--auto-resume"]
    process = start(*command, "--steps", "1000000")
    try:
        wait_for_rows(process, out)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        grace = time.monotonic() - sent
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    stopped = re.search(r"interrupted by SIGTERM at step (\d+): checkpoint \S+; continue with `catneuron train "
                        r"--resume --out '.*run' --data 'embedded'`", err.decode())
    assert stopped, err.decode()[-2000:]
    step = int(stopped.group(1))
    assert checkpoint.load(runs.checkpoint_path(out)).step == step > 0
    assert "Traceback" not in err.decode() and grace < 25  # a step and a save (seconds on a loaded machine)
    again = subprocess.run([*ENTRY, *command, "--steps", str(step + 3)], capture_output=True, env=ENV, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert checkpoint.load(runs.checkpoint_path(out)).step == step + 3
    assert runs.read_metrics(out)[-1]["step"] == step + 3


def test_auto_resume_starts_an_empty_run_and_refuses_other_flags(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--data", "embedded", "--out", out, "--steps", "2", "--auto-resume"]
    code, stdout, err = run(monkeypatch, capsys, *common, "--preset", "tiny")
    assert code == 0 and checkpoint.load(runs.checkpoint_path(out)).step == 2, err
    code, _, err = run(monkeypatch, capsys, *common, "--preset", "tiny", "--lr", "0.5")
    assert code == 2 and re.search(r"--auto-resume: .* config differs from these flags \(train.lr: ", err), err


def test_minutes_alone_lets_the_time_decide(monkeypatch, capsys, tmp_path):
    """`--minutes` without `--steps` trains until the time is up, not until the default 1000 steps."""
    asked = []

    def fit(self, steps, max_seconds=None):
        asked.append((steps, max_seconds))
        return TrainResult(0, False, {})

    monkeypatch.setattr(Trainer, "fit", fit)
    run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--out", tmp_path / "a",
        "--minutes", "3")
    run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--out", tmp_path / "b")
    assert asked == [(None, 180.0), (1000, None)]


def test_a_trainer_with_no_step_limit_stops_on_time(tmp_path):
    from catneuron.data.embedded import EmbeddedCorpus
    from catneuron.model.config import PRESETS

    result = Trainer(PRESETS["tiny"], EmbeddedCorpus(size=16), tmp_path).fit(None, max_seconds=0.5, progress=False)
    assert result.stopped_early and result.step > 0
    assert checkpoint.load(runs.checkpoint_path(tmp_path)).step == result.step


@pytest.mark.slow
def test_a_second_writer_of_a_run_folder_is_refused_in_one_line(tmp_path):
    """Two `train` on one --out before the first checkpoint (a new run, then a --resume): the second is refused,
    exit 2, one line; the first goes on and its run stays its own."""
    out = tmp_path / "run"
    first = start("--data", "embedded", "--preset", "tiny", "--out", str(out), "--steps", "1000000")
    try:
        wait_for_rows(first, out)
        for second in (["--data", "embedded", "--preset", "tiny", "--seed", "7"], ["--resume"]):
            while not runs.checkpoint_path(out).is_file() and second == ["--resume"]:
                time.sleep(0.1)
            done = subprocess.run([*ENTRY, *second, "--out", str(out), "--steps", "5"], capture_output=True,
                                  env=ENV, timeout=120)
            lines = done.stderr.decode().splitlines()
            assert done.returncode == 2 and len(lines) == 1, lines
            assert re.fullmatch(rf"catneuron: error: --out {re.escape(str(out))}: another catneuron process "
                                rf"\(pid {first.pid}\) is writing this run; .*", lines[0]), lines
        assert first.poll() is None
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 130
    assert checkpoint.read_config(runs.checkpoint_path(out)).train.seed == 0



def test_set_overrides_config_fields_and_the_run_records_its_provenance(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "embedded", "--preset", "tiny", "--steps", "2", "--out", str(out),
            "--set", "model.sparsity=0.2", "--set", "model.stages[0].maps=6", "--set", "train.lr=0.01"]
    code, _, _ = run(monkeypatch, capsys, *args)
    assert code == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["model"]["sparsity"], config["model"]["stages"][0]["maps"], config["train"]["lr"]) == (0.2, 6, 0.01)
    assert config["model"]["stages"][1] == json.loads(json.dumps(PRESETS["tiny"].model.stages[1].__dict__))
    session = json.loads((out / "provenance.json").read_text())["sessions"][0]
    assert session["catneuron"] == version("catneuron") and session["torch"] == torch.__version__
    assert session["command"] == shlex.join(["catneuron", *args])
    assert session["device"].startswith("cpu (") and session["from_step"] == 0
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert session["git"]["commit"] == head
    assert list(out.glob("events.out.tfevents.*"))
    code, _, err = run(monkeypatch, capsys, "train", "--out", str(out), "--steps", "3", "--resume", "--set",
                       "train.lr=0.1")
    assert code == 2 and "--set with --resume: a resumed run keeps the config" in err
    assert run(monkeypatch, capsys, "train", "--out", str(out), "--steps", "3", "--resume")[0] == 0
    sessions = json.loads((out / "provenance.json").read_text())["sessions"]
    assert [s["from_step"] for s in sessions] == [0, 2] and sessions[1]["command"].endswith("--resume")


@pytest.mark.parametrize("assignment,message", [
    ("model.nope=1", "--set model.nope=1: model: unknown key 'nope'"),
    ("model.stages[0].kernel=8.5", "model.stages[0].kernel must be an integer, got 8.5"),
    ("train.lr=-1", "train.lr must be a positive number, got -1.0"),
    ("train.optimizer=adam", "train.optimizer must be one of adagrad, sgd, got 'adam'"),
    ("model.lcn=maybe", "model.lcn must be true or false, got 'maybe'"),
    ("lr=0.1", "--set lr=0.1: FIELD must start with model. or train."),
    ("oops", "--set oops: give FIELD=VALUE"),
    ("model.stages[3].maps=2", "the config has stages[0] to stages[2]"),
])
def test_set_is_checked_as_the_yaml_file_is(monkeypatch, capsys, tmp_path, assignment, message):
    out = tmp_path / "new" / "run"
    code, _, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--out", str(out),
                       "--set", assignment)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_refused_data_folder_leaves_no_out_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    for data, message in ((tmp_path / "missing", "no such file or folder"), (tmp_path / "empty", "no images")):
        code, _, err = run(monkeypatch, capsys, "train", "--data", str(data), "--preset", "tiny", "--out",
                           str(tmp_path / "runs" / "a"))
        assert code == 2 and message in err
        assert not (tmp_path / "runs").exists()
    (tmp_path / "kept").mkdir()
    code, _, _ = run(monkeypatch, capsys, "train", "--data", str(tmp_path / "missing"), "--preset", "tiny",
                     "--out", str(tmp_path / "kept"))
    assert code == 2 and (tmp_path / "kept").is_dir()  # a folder that was there before stays
    assert runs.checkpoint_path(tmp_path / "kept").exists() is False


def test_wandb_not_installed_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)
    code, _, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--out",
                       str(tmp_path / "run"), "--wandb", "study")
    assert code == 2 and "--wandb: W&B is not installed" in err and not (tmp_path / "run").exists()
