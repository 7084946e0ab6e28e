"""`catneuron train`: --set, the run folder's provenance and event files, no empty --out after a refusal."""

import json
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from clirun import run

from catneuron.model.config import PRESETS
from catneuron.store import runs


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
