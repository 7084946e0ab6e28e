"""`catneuron visualize` and `catneuron invariance` end to end on a tiny trained run."""

import csv
import json

import numpy as np
import pytest
from clirun import run as cli
from PIL import Image

from catneuron.data.sources import ArraySource
from catneuron.model.config import PRESETS
from catneuron.store import files, runs
from catneuron.train.trainer import Trainer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A run of the tiny preset trained a few steps, a folder of 12 images and one of 3 views by angle."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 1, 16, 16), dtype=np.uint8)
    Trainer(PRESETS["tiny"], ArraySource(images, "random images"), root / "run").fit(3, progress=False)
    for folder, names in (("images", [f"{i:02d}" for i in range(12)]), ("views", ["v_-45", "v_0", "v_45"])):
        (root / folder).mkdir()
        for name in names:
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / folder / f"{name}.png")
    return root


def test_visualize_writes_the_figure_and_the_convergence_record(monkeypatch, capsys, tiny):
    run, neuron = tiny / "run", "s2.pool.m1.y2.x3"
    code, out, err = cli(monkeypatch, capsys, "visualize", run, "--neuron", neuron, "--images", tiny / "images",
                         "--top", 4, "--starts", 2, "--steps", 5)
    assert code == 0, err
    assert (run / "figures" / f"optimal_{neuron}.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "results" / f"optimal_{neuron}.json").read_text())
    assert record["neuron"] == neuron and record["stage"] == 2 and record["starts"] == 2
    assert record["value"] == max(s["value"] for s in record["all_starts"]) == record["convergence"]["value"]
    assert {"iterations", "grad_norm", "step_size", "reason", "converged"} <= set(record["convergence"])
    assert len(record["top_stimuli"]) == 4 and "concept" not in record  # the report reads "concept" as a scan
    values = [t["value"] for t in record["top_stimuli"]]
    assert values == sorted(values, reverse=True)
    assert f"f(x*) = {record['value']:.4g}" in out
    assert record["stopped_on"] == record["convergence"]["reason"] and record["tolerance"] == 1e-4
    assert record["converged"] == (record["stopped_on"] not in ("steps", "time"))
    assert record["stopping"] in out and record["stopping"].startswith(("converged", "did not converge"))
    assert "iteration 1/5" in err  # progress on stderr


def test_visualize_says_whether_it_converged_within_its_budgets(monkeypatch, capsys, tiny):
    run, neuron = tiny / "run", "s3.norm.m1.y1.x1"
    code, out, err = cli(monkeypatch, capsys, "visualize", run, "--neuron", neuron, "--starts", 2, "--steps", 1,
                         "--tolerance", 1e-12)
    assert code == 0, err
    assert "did not converge: the iteration budget (1) ran out" in out
    record = json.loads((run / "results" / f"optimal_{neuron}.json").read_text())
    assert (record["converged"], record["stopped_on"], record["converged_starts"]) == (False, "steps", 0)
    code, out, err = cli(monkeypatch, capsys, "visualize", run, "--neuron", neuron, "--starts", 2, "--steps", 400,
                         "--tolerance", 0.05)
    assert code == 0, err
    record = json.loads((run / "results" / f"optimal_{neuron}.json").read_text())
    assert record["converged"] and record["convergence"]["iterations"] < 400 and "converged: " in out


def test_visualize_takes_the_best_neuron_of_a_concept(monkeypatch, capsys, tiny):
    run = tiny / "run"
    code, _, err = cli(monkeypatch, capsys, "visualize", run, "--concept", "cat faces")
    assert code == 2 and err.count("\n") == 1 and "--concept cat faces: no " in err and "evaluate" in err
    files.write_json(runs.results_dir(run) / "cat_faces.json",
                    {"concept": "cat faces", "best_neuron": {"id": "s3.norm.m0.y1.x1"}})
    code, _, err = cli(monkeypatch, capsys, "visualize", run, "--concept", "cat faces", "--starts", 1, "--steps", 3)
    assert code == 0, err
    record = json.loads((run / "results" / "optimal_s3.norm.m0.y1.x1.json").read_text())
    assert record["from_concept"] == "cat faces" and record["top_stimuli"] == []


def test_visualize_takes_the_best_neuron_of_a_stage(monkeypatch, capsys, tiny):
    run = tiny / "run"
    files.write_json(runs.results_dir(run) / "faces.json", {
        "concept": "faces", "best_neuron": {"id": "s1.filter.m0.y1.x1"},
        "best_by_stage": [{"stage": s, "id": f"s{s}.pool.m1.y{s - 1}.x0"} for s in (1, 2, 3)]})
    code, out, err = cli(monkeypatch, capsys, "visualize", run, "--concept", "faces", "--stage", 3, "--starts", 1,
                         "--steps", 2)
    assert code == 0, err
    assert "s3.pool.m1.y2.x0: f(x*)" in out
    assert json.loads((run / "results" / "optimal_s3.pool.m1.y2.x0.json").read_text())["from_concept"] == "faces"
    code, _, err = cli(monkeypatch, capsys, "visualize", run, "--concept", "faces", "--stage", 4)
    assert code == 2 and "--stage 4: " in err and "stages 1, 2, 3" in err
    code, _, err = cli(monkeypatch, capsys, "visualize", run, "--neuron", "s1.pool.m0.y0.x0", "--stage", 2)
    assert code == 2 and "--stage 2: " in err and "give --concept" in err


def test_invariance_writes_curves_as_csv_and_png(monkeypatch, capsys, tiny):
    run, neuron = tiny / "run", "s3.pool.m2.y0.x1"
    code, out, err = cli(monkeypatch, capsys, "invariance", run, "--neuron", neuron, "--images", tiny / "images",
                         "--n", 3, "--out-of-plane", tiny / "views")
    assert code == 0, err
    assert (run / "figures" / f"invariance_{neuron}.png").read_bytes()[:4] == b"\x89PNG"
    with open(run / "results" / f"invariance_{neuron}.csv") as f:
        rows = list(csv.DictReader(f))
    kinds = {r["transform"] for r in rows}
    assert kinds == {"scale", "horizontal", "vertical", "rotation", "out-of-plane"}
    assert all(r["n"] == "3" for r in rows if r["transform"] != "out-of-plane")
    assert [r["amount"] for r in rows if r["transform"] == "out-of-plane"] == ["-45", "0", "45"]
    assert "out-of-plane" in out


@pytest.mark.parametrize("args,message", [
    (["visualize", "{run}", "--neuron", "s4.pool.m0.y0.x0"], "the network has stages 1 to 3"),
    (["visualize", "{run}", "--neuron", "face"], "--neuron face: not a neuron id"),
    (["visualize", "{run}"], "--neuron / --concept: give exactly one"),
    (["visualize", "{run}", "--neuron", "s1.pool.m0.y0.x0", "--starts", "0"], "--starts 0: must be at least 1"),
    (["visualize", "{run}", "--neuron", "s1.pool.m0.y0.x0", "--images", "/no/dir"], "--images /no/dir: no such"),
    (["invariance", "{run}", "--neuron", "s1.norm.m0.y10.x0", "--images", "{images}"], "positions run from 0 to 9"),
    (["invariance", "{run}", "--neuron", "s1.norm.m0.y0.x0", "--images", "{images}", "--n", "0"], "--n 0: must be"),
    (["invariance", "/no/run", "--neuron", "s1.norm.m0.y0.x0", "--images", "{images}"], "/no/run: no such run"),
])
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tiny, args, message):
    args = [a.format(run=tiny / "run", images=tiny / "images") for a in args]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1
