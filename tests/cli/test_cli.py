"""The command line: one-line errors with exit 2, info, train/resume, evaluate on folders, demo end to end."""

import json
import sys

import pytest

from catneuron.cli import main
from catneuron.store import runs


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
    (["evaluate", "/no/run", "--positives", "a", "--negatives", "b", "--null-seeds", "1"], "--null-seeds 1: 0 (none)"),
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


def test_train_resume_and_evaluate_folders(monkeypatch, capsys, tmp_path, image_folder):
    image_folder(tmp_path / "data" / "a", 30, 0, corrupt=2)
    image_folder(tmp_path / "pos", 12, 1)
    image_folder(tmp_path / "neg", 22, 2)
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
                          "--json", str(tmp_path / "r.json"), "--null-seeds", "2", "--probe")
    assert code == 0 and "Table 1, blobs" in stdout and "mean best of 2 random networks" in stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["null"]["by_stage"]) == len(result["probe"]["by_stage"]) == 3
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
    assert result["null"]["seeds"] == [1, 2, 3, 4, 5] and "probe" in result and "probe" in result["verdict"]["text"]
    index = tmp_path / "demo" / "report" / "index.html"
    assert f"report: {index}" in stdout and result["best_neuron"]["id"] in index.read_text()


def test_evaluate_several_concepts_keeps_the_first_ratio(monkeypatch, capsys, tmp_path, image_folder):
    for name, count, seed in (("data", 30, 0), ("faces", 10, 1), ("cats", 25, 2), ("neg", 20, 3)):
        image_folder(tmp_path / name, count, seed)
    out = tmp_path / "run"
    assert run(monkeypatch, capsys, "train", "--data", str(tmp_path / "data"), "--preset", "tiny", "--steps", "2",
               "--out", str(out))[0] == 0
    code, stdout, _ = run(monkeypatch, capsys, "evaluate", str(out), "--positives", f"faces={tmp_path / 'faces'}",
                          "--positives", f"cats={tmp_path / 'cats'}", "--negatives", str(tmp_path / "neg"),
                          "--linear-filters", "20")
    assert code == 0 and "Table 1, faces" in stdout and "Table 1, cats" in stdout
    faces = json.loads((out / "results" / "faces.json").read_text())
    cats = json.loads((out / "results" / "cats.json").read_text())
    assert (faces["n_positive"], faces["n_negative"]) == (10, 20)
    assert (cats["n_positive"], cats["n_negative"]) == (10, 20)


def test_table_trains_every_comparison_model(monkeypatch, capsys, tmp_path, image_folder):
    for name, count, seed in (("data", 30, 0), ("control", 30, 4), ("faces", 10, 1), ("neg", 20, 3)):
        image_folder(tmp_path / name, count, seed)
    out = tmp_path / "table"
    code, stdout, _ = run(monkeypatch, capsys, "table", "--data", str(tmp_path / "data"), "--control-data",
                          str(tmp_path / "control"), "--positives", f"faces={tmp_path / 'faces'}", "--negatives",
                          str(tmp_path / "neg"), "--preset", "tiny", "--steps", "2", "--out", str(out),
                          "--linear-filters", "20", "--centroids", "5")
    assert code == 0
    for label in ("best linear filter", "no LCN", "sigmoid", "K-means", "trained without faces", "81.7"):
        assert label in stdout
    summary = json.loads((out / "table.json").read_text())
    row = summary["concepts"]["faces"]
    assert set(row) == {"network", "no_lcn", "sigmoid_ae", "kmeans", "no_faces"}
    for name in ("network", "no_lcn", "sigmoid_ae", "no_faces"):
        assert (out / name / "checkpoint.safetensors").is_file()
    assert row["kmeans"]["n_centroids"] == 5


def test_train_watch_shows_the_watch_and_logs_the_curve(monkeypatch, capsys, tmp_path, image_folder):
    image_folder(tmp_path / "faces", 12, 1)
    image_folder(tmp_path / "neg", 22, 2)
    out = tmp_path / "run"
    code, _, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--steps", "4",
                       "--out", str(out), "--watch", f"faces={tmp_path / 'faces'}", "--watch-negatives",
                       str(tmp_path / "neg"), "--watch-every", "40", "--watch-budget", "1")
    assert code == 0 and "faces s2/3 held-out" in err and "| bar " in err
    assert [r["images"] for r in runs.read_rows(out) if r.get("record") == "watch"] == [0, 40, 80]
    code, _, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--out",
                       str(tmp_path / "other"), "--watch", f"faces={tmp_path / 'faces'}")
    assert code == 2 and "--watch and --watch-negatives: give both" in err
