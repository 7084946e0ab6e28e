"""`catneuron evaluate` and `visualize`: --checkpoint best|last|PATH, --device, every unit's scores saved."""

import json

import numpy as np
import pytest
from clirun import run

from catneuron.analysis.activations import UnitIndex
from catneuron.analysis.evaluate import SUBLAYER_CODES
from catneuron.store import checkpoint, runs

pytestmark = pytest.mark.slow  # a real evaluate (with the null and the probe) per module: ~10 s on 2 busy cores


@pytest.fixture
def watched(monkeypatch, capsys, tmp_path, image_folder):
    image_folder(tmp_path / "data", 30, 0)
    image_folder(tmp_path / "pos", 12, 1)
    image_folder(tmp_path / "neg", 22, 2)
    out = tmp_path / "run"
    assert run(monkeypatch, capsys, "train", "--data", str(tmp_path / "data"), "--preset", "tiny", "--steps", "6",
               "--out", str(out), "--watch", f"faces={tmp_path / 'pos'}", "--watch-negatives", str(tmp_path / "neg"),
               "--watch-every", "40", "--watch-budget", "1")[0] == 0
    return tmp_path, out


def evaluate(monkeypatch, capsys, folder, out, *more):
    return run(monkeypatch, capsys, "evaluate", str(out), "--positives", str(folder / "pos"), "--negatives",
               str(folder / "neg"), "--linear-filters", "100", *more)


def test_checkpoint_choices_and_every_units_scores(monkeypatch, capsys, watched):
    folder, out = watched
    best = checkpoint.load(out / runs.BEST_CHECKPOINT)
    assert best.step > 0  # never the untrained network
    code, stdout, err = evaluate(monkeypatch, capsys, folder, out, "--checkpoint", "best")
    assert code == 0 and f"every unit's scores in {out / 'results' / 'faces_units.npz'}" in stdout
    assert "100 asked of 30 training images: each image is tried about 3 times" in stdout
    result = json.loads((out / "results" / "faces.json").read_text())
    assert result["inputs"]["checkpoint"] == str(out / runs.BEST_CHECKPOINT)
    assert result["inputs"]["checkpoint_step"] == best.step
    with np.load(out / result["unit_scores"]["file"], allow_pickle=False) as table:
        scores = {k: table[k] for k in table.files}
    network, _ = runs.load_network(out)
    assert set(scores) == set(result["unit_scores"]["columns"])
    assert all(len(column) == len(UnitIndex(network)) for column in scores.values())
    for record in result["best_by_stage"]:
        in_stage = scores["stage"] == record["stage"]
        assert scores["accuracy"][in_stage].max() == pytest.approx(record["accuracy"])
    top = result["best_neuron"]
    unit = np.flatnonzero((scores["stage"] == top["stage"]) & (scores["accuracy"] == scores["accuracy"].max())
                          & (scores["sublayer"] == SUBLAYER_CODES.index(top["sublayer"])))
    assert len(unit) >= 1 and scores["auc"][unit].max() == pytest.approx(top["auc"], abs=1e-6)
    assert evaluate(monkeypatch, capsys, folder, out, "--checkpoint", str(runs.checkpoint_path(out)))[0] == 0
    assert json.loads((out / "results" / "faces.json").read_text())["inputs"]["checkpoint_step"] == 6
    code, _, err = evaluate(monkeypatch, capsys, folder, out, "--checkpoint", "elsewhere.safetensors")
    assert code == 2 and "--checkpoint elsewhere.safetensors: no such file" in err
    code, _, err = evaluate(monkeypatch, capsys, folder, out, "--device", "tpu")
    assert code == 2 and "--device tpu: not a device name" in err


def test_visualize_takes_the_best_checkpoint(monkeypatch, capsys, watched):
    _, out = watched
    code, stdout, _ = run(monkeypatch, capsys, "visualize", str(out), "--neuron", "s2.pool.m0.y0.x0", "--starts", "1",
                          "--steps", "2", "--checkpoint", "best")
    assert code == 0 and "f(x*)" in stdout
    record = json.loads((out / "results" / "optimal_s2.pool.m0.y0.x0.json").read_text())
    assert record["checkpoint_step"] == checkpoint.load(out / runs.BEST_CHECKPOINT).step
