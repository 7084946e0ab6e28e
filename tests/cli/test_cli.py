"""The command line: one-line errors with exit 2, info, train/resume, evaluate on folders, demo end to end."""

import json
import re

import pytest
from clirun import run

from catneuron.store import rates, runs


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "/no/such/folder", "--preset", "tiny"], "--data /no/such/folder: no such file or folder"),
    (["train", "--data", "embedded", "--preset", "huge"], "--preset: unknown preset 'huge'"),
    (["train", "--data", "embedded", "--bogus"], "No such option: --bogus"),
    (["train", "--data", "embedded", "--precision", "fp16"], "--precision fp16: choose float32 or bf16"),
    (["train", "--data", "embedded", "--seed", "-1"], "--seed -1: must be at least 0"),
    (["demo", "--precision", "fp16"], "--precision fp16: choose float32 or bf16"),
    (["demo", "--seed", "-1"], "--seed -1: must be at least 0"),
    (["demo", "--seed", "one"], "Invalid value for '--seed'"),
    (["info", "--config", "/no/config.yaml"], "--config /no/config.yaml: cannot read"),
    (["info", "--device", "tpu"], "--device tpu: choose cpu or cuda"),
    (["info", "--device", "cuda", "--gpu-memory", "-1"], "--gpu-memory -1.0: must be a positive number of GB"),
    (["evaluate", "/no/run", "--positives", "a", "--negatives", "b"], "no checkpoint there"),
    (["evaluate", "/no/run", "--positives", "a", "--negatives", "b", "--positive-fraction", "1.5"],
     "--positive-fraction 1.5: must be between 0 and 1"),
    (["evaluate", "/no/run", "--positives", "a", "--negatives", "b", "--paper-ratio", "--positive-fraction", "0.3"],
     "--paper-ratio and --positive-fraction: give one"),
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


def test_info_prints_parameters_without_allocating(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CATNEURON_RATES", str(tmp_path / "rates.json"))
    code, out, _ = run(monkeypatch, capsys, "info", "--preset", "paper")
    assert code == 0 and "942,217,920" in out
    assert "10M images: no rate measured on this machine yet" in out


def test_info_estimates_10m_images_at_the_measured_rate(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CATNEURON_RATES", str(tmp_path / "rates.json"))
    rates.record(rates.Rate("paper", 5.0, 100, 3, 2, "Test CPU", "float32", "2026-12-03"))
    code, out, _ = run(monkeypatch, capsys, "info", "--preset", "paper")
    assert code == 0 and "10M images: 23.1 days at 5.0 images/s" in out and "Test CPU" in out
    code, out, _ = run(monkeypatch, capsys, "info", "--preset", "small")
    assert code == 0 and "no rate measured" in out  # another preset's rate is not used


@pytest.mark.slow
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
    code, _, err = run(monkeypatch, capsys, "train", "--steps", "6", "--out", str(out), "--resume", "--precision",
                       "bf16")
    assert code == 2 and "--precision with --resume: a resumed run keeps the config" in err
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


@pytest.mark.slow
def test_runs_record_their_data_absolute_and_resume_reads_it(monkeypatch, capsys, tmp_path, image_folder):
    image_folder(tmp_path / "work" / "data", 30, 0)
    image_folder(tmp_path / "pos", 12, 1)
    image_folder(tmp_path / "neg", 22, 2)
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = run(monkeypatch, capsys, "train", "--preset", "tiny", "--out", "run")
    assert code == 2 and "--data: needed to start a run" in err
    assert run(monkeypatch, capsys, "train", "--data", "data", "--preset", "tiny", "--steps", "2", "--out",
               "run")[0] == 0
    out = tmp_path / "work" / "run"
    assert json.loads((out / "config.json").read_text())["data"] == str(tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path)  # elsewhere: relative "data" would now name nothing
    code, stdout, _ = run(monkeypatch, capsys, "train", "--out", str(out), "--steps", "3", "--resume")
    assert code == 0 and "step 3" in stdout and "(30 images)" in stdout
    code, stdout, _ = run(monkeypatch, capsys, "evaluate", str(out), "--positives", str(tmp_path / "pos"),
                          "--negatives", str(tmp_path / "neg"), "--linear-filters", "20")
    assert code == 0 and "Table 1" in stdout
    (out / "config.json").write_text("{}")
    code, _, err = run(monkeypatch, capsys, "train", "--out", str(out), "--steps", "4", "--resume")
    assert code == 2 and "records no training data (give --data)" in err


@pytest.mark.slow
def test_demo_end_to_end_on_tiny(monkeypatch, capsys, tmp_path):
    code, stdout, _ = run(monkeypatch, capsys, "demo", "--preset", "tiny", "--minutes", "0.05", "--out",
                          str(tmp_path / "demo"), "--linear-filters", "200", "--seed", "3", "--precision", "bf16")
    assert code == 0 and "training the tiny preset (seed 3, bf16)" in stdout
    recorded = json.loads((tmp_path / "demo" / "config.json").read_text())["config"]["train"]
    assert (recorded["seed"], recorded["precision"]) == (3, "bf16")
    assert "Table 1, faces" in stdout and "best linear filter" in stdout and "81.7" in stdout
    result = json.loads((tmp_path / "demo" / "results" / "faces.json").read_text())
    assert result["positive_fraction"] == pytest.approx(100 / 284)
    assert result["null"]["seeds"] == [1, 2, 3, 4, 5] and "probe" in result and "probe" in result["verdict"]["text"]
    index = tmp_path / "demo" / "report" / "index.html"
    assert f"report: {index}" in stdout and result["best_neuron"]["id"] in index.read_text()
    assert "seed</th><td>3<" in index.read_text() and "precision</th><td>bf16<" in index.read_text()
    for stage, best in enumerate(result["best_by_stage"], start=1):  # Figures 3 and 4 for each stage's best
        neuron = best["id"]
        assert neuron.startswith(f"s{stage}.") and f"stage {stage}, {neuron}: optimal stimulus" in stdout
        optimal = json.loads((tmp_path / "demo" / "results" / f"optimal_{neuron}.json").read_text())
        assert optimal["neuron"] == neuron and optimal["stopping"] in stdout and len(optimal["top_stimuli"]) == 16
        assert (tmp_path / "demo" / "results" / f"invariance_{neuron}.csv").read_text().count("\n") > 40
        for kind in ("optimal", "invariance"):
            assert (tmp_path / "demo" / "figures" / f"{kind}_{neuron}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
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


@pytest.mark.slow
def test_evaluate_at_the_papers_ratio_records_its_inputs(monkeypatch, capsys, tmp_path, image_folder):
    """--paper-ratio subsamples every concept to 35.2% positives; the result says what it was computed from;
    the printed output leads with the verdict and names the chance row by the majority class."""
    for name, count, seed in (("data", 30, 0), ("faces", 10, 1), ("neg", 20, 3)):
        image_folder(tmp_path / name, count, seed)
    out = tmp_path / "run"
    assert run(monkeypatch, capsys, "train", "--data", str(tmp_path / "data"), "--preset", "tiny", "--steps", "2",
               "--out", str(out))[0] == 0
    code, stdout, stderr = run(monkeypatch, capsys, "evaluate", str(out), "--positives", str(tmp_path / "faces"),
                               "--negatives", str(tmp_path / "neg"), "--linear-filters", "20", "--paper-ratio")
    assert code == 0
    assert stdout.lstrip().startswith("faces, verdict:") and stdout.index("verdict") < stdout.index("Table 1")
    assert "chance (always 'not faces')" in stdout and "best neuron of any stage (stage " in stdout
    assert "linear: filters 20/20" in stderr and "trained network, pass 2/2 (counts)" in stderr
    result = json.loads((out / "results" / "faces.json").read_text())
    assert (result["n_positive"], result["n_negative"]) == (10, 18)
    assert result["baselines_detail"]["chance"]["accuracy"] == pytest.approx(18 / 28)
    inputs = result["inputs"]
    assert inputs["positives"] == str((tmp_path / "faces").resolve()) and inputs["checkpoint_step"] == 2
    assert inputs["negatives"] == str((tmp_path / "neg").resolve()) and inputs["linear_filters"] == 20
    assert inputs["positive_fraction_requested"] == pytest.approx(13026 / 37000) and inputs["date"].startswith("20")
    for stage in result["best_by_stage"]:
        for path in result["neuron_figures"][stage["id"]].values():
            assert (out / path).is_file()


@pytest.mark.slow
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


@pytest.mark.slow
def test_train_watch_shows_the_watch_and_logs_the_curve(monkeypatch, capsys, tmp_path, image_folder):
    image_folder(tmp_path / "faces", 12, 1)
    image_folder(tmp_path / "neg", 22, 2)
    out = tmp_path / "run"
    code, stdout, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--steps", "4",
                            "--out", str(out), "--watch", f"faces={tmp_path / 'faces'}", "--watch-negatives",
                            str(tmp_path / "neg"), "--watch-every", "40", "--watch-budget", "1", "--watch-images", "20")
    assert code == 0 and re.search(r"faces s2/3 \d+\.\d% \(bar \d+\.\d%\)", err)  # percent, as elsewhere
    assert stdout.count("watch: faces: scanning 20 of 34 images") == 1
    assert [r["images"] for r in runs.read_rows(out) if r.get("record") == "watch"] == [0, 40, 80]
    code, _, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--preset", "tiny", "--out",
                       str(tmp_path / "other"), "--watch", f"faces={tmp_path / 'faces'}")
    assert code == 2 and "--watch and --watch-negatives: give both" in err


def test_a_batch_too_large_for_memory_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    """Was accepted, then grew memory by ~100 MB/s until the kernel killed it (issue 27, item 6)."""
    config = tmp_path / "huge_batch.yaml"
    config.write_text("preset: tiny\ntrain: {batch_size: 100000000000}\n")
    code, _, err = run(monkeypatch, capsys, "train", "--data", "embedded", "--config", str(config), "--out",
                       str(tmp_path / "run"), "--steps", "1")
    assert code == 2 and "batches of 100,000,000,000 needs at least" in err and err.count("\n") == 1


@pytest.mark.slow
def test_info_plans_a_gpu_run_on_fake_tensors(monkeypatch, capsys):
    """`info --device cuda`: peak memory, the largest batch and FLOPs measured on fake CUDA tensors (tiny: quick)."""
    code, out, _ = run(monkeypatch, capsys, "info", "--preset", "tiny", "--device", "cuda", "--gpu-memory", "0.05")
    assert code == 0
    assert "peak device memory at batch 20:" in out and "largest batch within 0.05 GB:" in out
    flops = float(out.split("training FLOPs per image: ")[1].split()[0])
    assert flops > 0
