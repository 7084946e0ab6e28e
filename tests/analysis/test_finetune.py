"""Fine-tuning: the split, the two phases, the run folder it writes, and the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from catneuron.analysis.finetune import (
    Schedule,
    finetune_run,
    load_classifier,
    load_data,
    train_frozen,
    train_jointly,
)
from catneuron.cli import main
from catneuron.data.labelled import read_labelled, split
from catneuron.data.sources import ArraySource
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.store import runs
from catneuron.train.trainer import Trainer

TINY = PRESETS["tiny"]
SCHEDULE = Schedule(epochs=8, batch_size=10, lr=0.03)


def blobs(label: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """16x16 grey images of class `label`: a square of random brightness at one of three places, on faint noise."""
    y, x = [(0, 0), (5, 5), (10, 10)][label]
    images = rng.uniform(0, 10, (count, 16, 16))
    images[:, y:y + 6, x:x + 6] += rng.uniform(150, 200, (count, 1, 1))
    return images.astype(np.uint8)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = root / f"class{label}"
        folder.mkdir()
        for i, image in enumerate(blobs(label, 12, rng)):
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A briefly trained tiny network on unlabeled images of the same kind."""
    rng = np.random.default_rng(1)
    images = np.concatenate([blobs(label, 20, rng) for label in range(3)])[:, None]
    folder = tmp_path_factory.mktemp("run")
    Trainer(TINY, ArraySource(images, "blobs"), folder).fit(10, progress=False)
    return folder


def test_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), [10, 7, 3, 2])
    train, val = split(labels, 0.5, seed=3)
    again_train, again_val = split(labels, 0.5, seed=3)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(len(labels)))
    assert set(labels[train]) == set(labels[val]) == {0, 1, 2, 3}
    assert len(val) == 5 + 4 + 2 + 1  # half of each class, rounded, never all of a class
    other_train, _ = split(labels, 0.5, seed=4)
    assert not np.array_equal(train, other_train)


def test_bad_folders_are_user_errors(tmp_path, labelled):
    with pytest.raises(UserError, match="^--train .*missing: no such folder"):
        read_labelled(tmp_path / "missing", 16, 1)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(flat / "a.png")
    with pytest.raises(UserError, match="^--train .*flat: no class sub-folders"):
        read_labelled(flat, 16, 1)
    (tmp_path / "few" / "a").mkdir(parents=True)
    (tmp_path / "few" / "b").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "few" / name / "0.png")
    with pytest.raises(UserError, match="class 'a' has 1 readable image.*at least 2"):
        load_data(TINY, tmp_path / "few", None, None, seed=0)
    with pytest.raises(UserError, match="^--val and --split"):
        load_data(TINY, labelled, labelled, 0.5, seed=0)


def test_frozen_phase_learns_and_leaves_network_alone_then_finetuning_changes_it(run, labelled):
    network, _ = runs.load_network(run)
    train, val = load_data(TINY, labelled, None, None, seed=0)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    head, frozen, history = train_frozen(network, train, val, SCHEDULE)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert frozen["top1"] >= 0.8 and frozen["top5"] is None
    assert [row["phase"] for row in history] == [1] * SCHEDULE.epochs
    finetuned, _ = train_jointly(network, head, train, val, SCHEDULE, progress=False)
    changed = [k for k, v in network.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("stages.0.") for k in changed), "gradients must reach the first stage"
    assert any(k.startswith("stages.2.") for k in changed)
    assert finetuned["top1"] >= 0.8


def test_finetune_run_writes_a_run_folder_with_its_classifier(run, labelled, tmp_path):
    train, val = load_data(TINY, labelled, None, None, seed=0)
    out = tmp_path / "tuned"
    results = finetune_run(run, out, train, val, SCHEDULE, progress=False)
    saved = json.loads((out / "results" / "finetune.json").read_text())
    assert saved["finetuned"] == results["finetuned"] and saved["classes"] == ["class0", "class1", "class2"]
    assert saved["n_train"] + saved["n_val"] == 36 and saved["init"] == "pretrained"
    network, ckpt = runs.load_network(out)  # what evaluate, visualize and report do
    head, classes = load_classifier(out)
    assert classes == saved["classes"] and ckpt.extra["finetune"]["run"] == str(run)
    from catneuron.analysis.features import batched_features

    logits = head(batched_features(network, val.images))
    assert float((logits.argmax(1) == torch.from_numpy(val.labels)).float().mean()) == saved["finetuned"]["top1"]
    with pytest.raises(UserError, match="already holds a run"):
        finetune_run(run, out, train, val, SCHEDULE, progress=False)
    with pytest.raises(UserError, match="not a fine-tuned run"):
        load_classifier(run)


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["catneuron", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_compare_side_by_side(run, labelled, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    code, stdout, _ = cli(monkeypatch, capsys, "finetune", str(run), "--train", str(labelled), "--epochs", "2",
                          "--batch-size", "10", "--out", str(out), "--compare")
    assert code == 0, stdout
    assert "pretrained" in stdout and "from scratch" in stdout
    assert any(line.startswith("fine-tuned top-1") and line.count("%") == 2 for line in stdout.splitlines())
    scratch = json.loads((tmp_path / "cmp-scratch" / "results" / "finetune.json").read_text())
    tuned = json.loads((out / "results" / "finetune.json").read_text())
    assert scratch["init"] == "random" and tuned["init"] == "pretrained"
    assert scratch["schedule"] == tuned["schedule"] and scratch["n_train"] == tuned["n_train"]


def test_cli_bad_input_is_one_line(run, tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "finetune", str(run), "--train", str(tmp_path / "nowhere"),
                       "--out", str(tmp_path / "x"))
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("catneuron: error: --train ") and "no such folder" in err
