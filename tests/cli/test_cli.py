"""The command line: one-line errors with exit 2, info, train/resume, evaluate on folders, demo end to end."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from catneuron.cli import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["catneuron", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "/no/such/folder", "--preset", "tiny"], "--data /no/such/folder: no such file or folder"),
    (["train", "--data", "embedded", "--preset", "huge"], "--preset: unknown preset 'huge'"),
    (["train", "--data", "embedded", "--bogus"], "No such option: --bogus"),
    (["info", "--config", "/no/config.yaml"], "--config /no/config.yaml: cannot read"),
    (["evaluate", "/no/run", "--positives", "a", "--negatives", "b"], "no checkpoint there"),
])
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_empty_image_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    code, _, err = run(monkeypatch, capsys, "train", "--data", str(tmp_path), "--preset", "tiny", "--out",
                       str(tmp_path / "run"))
    assert code == 2 and "no images found" in err


def test_info_prints_parameters_without_allocating(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "info", "--preset", "paper")
    assert code == 0 and "942,217,920" in out


def write_images(folder, count: int, seed: int, corrupt: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i in range(corrupt):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8 truncated")


def test_train_resume_and_evaluate_folders(monkeypatch, capsys, tmp_path):
    write_images(tmp_path / "data" / "a", 30, 0, corrupt=2)
    write_images(tmp_path / "pos", 12, 1)
    write_images(tmp_path / "neg", 22, 2)
    out = tmp_path / "run"
    code, stdout, _ = run(monkeypatch, capsys, "train", "--data", str(tmp_path / "data"), "--preset", "tiny",
                          "--steps", "4", "--out", str(out))
    assert code == 0 and "skipped 2 unreadable" in stdout
    code, _, err = run(monkeypatch, capsys, "train", "--data", str(tmp_path / "data"), "--preset", "tiny",
                       "--steps", "4", "--out", str(out))
    assert code == 2 and "already holds a run" in err
    code, stdout, _ = run(monkeypatch, capsys, "train", "--data", str(tmp_path / "data"), "--steps", "6",
                          "--out", str(out), "--resume")
    assert code == 0 and "step 6" in stdout
    code, stdout, _ = run(monkeypatch, capsys, "evaluate", str(out), "--positives", str(tmp_path / "pos"),
                          "--negatives", str(tmp_path / "neg"), "--concept", "blobs", "--linear-filters", "50",
                          "--json", str(tmp_path / "r.json"))
    assert code == 0 and "Table 1, blobs" in stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result == json.loads((out / "results" / "blobs.json").read_text())
    assert (result["n_positive"], result["n_negative"]) == (12, 22)
    for path in result["figures"].values():
        assert (out / path).is_file()


def test_demo_end_to_end_on_tiny(monkeypatch, capsys, tmp_path):
    code, stdout, _ = run(monkeypatch, capsys, "demo", "--preset", "tiny", "--minutes", "0.05", "--out",
                          str(tmp_path / "demo"), "--linear-filters", "200")
    assert code == 0
    assert "Table 1, faces" in stdout and "best linear filter" in stdout and "81.7" in stdout
    result = json.loads((tmp_path / "demo" / "results" / "faces.json").read_text())
    assert result["positive_fraction"] == pytest.approx(100 / 284)
