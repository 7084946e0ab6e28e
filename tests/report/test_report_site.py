"""The report of a tiny real run: numbers as in the results JSON, every link resolves, hostile names stay text."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest
import reportkit as kit

from catneuron.errors import UserError
from catneuron.report import write_report


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return kit.train_tiny(tmp_path_factory.mktemp("tiny") / "run")


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return kit.add_analyses(kit.copy_run(tiny_run, tmp_path / "run"))


def pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.html"))


def check_links(out: Path) -> int:
    """Every href and src of every page points at an existing file inside the report (and anchors exist)."""
    checked = 0
    for page in pages(out):
        assert "http:" not in page.read_text() and "https:" not in page.read_text()  # nothing fetched, no CDN
        tree = kit.parse(page)
        for node in tree.iter():
            for attr in ("href", "src"):
                url = node.attrs.get(attr)
                if url is None:
                    continue
                assert "://" not in url and not url.startswith(("//", "javascript:", "data:")), url
                path, _, anchor = url.partition("#")
                target = (page.parent / unquote(path)).resolve() if path else page
                assert target.is_file(), f"{page.name}: {url} does not resolve"
                assert target.is_relative_to(out.resolve()), url
                if anchor:
                    assert kit.parse(target).find(id=anchor) is not None, f"{page.name}: no #{anchor} in {target}"
                checked += 1
    return checked


def test_numbers_equal_the_results_json(run):
    index = write_report(run)
    assert index == run / "report" / "index.html"
    faces = json.loads((run / "results" / "faces.json").read_text())
    tree = kit.parse(index)
    section = tree.find("section", id="concept-faces")
    table1 = {cells[0].text(): (cells[1].text(), cells[2].text()) for cells in kit.table_rows(section.find("table"))
              if len(cells) == 3}
    b = faces["baselines"]
    assert table1["random guess (majority class)"] == (f"{100 * b['random_guess']:.1f}", "64.8")
    assert table1["best linear filter"] == (f"{100 * b['linear_filter']:.1f}", "74.0")
    assert table1["best first-stage neuron"] == (f"{100 * b['best_first_stage']:.1f}", "71.0")
    assert table1["best neuron"] == (f"{100 * faces['best_neuron']['accuracy']:.1f}", "81.7")
    assert table1["best neuron, chosen on one half, scored on the other"][0] == f"{100 * faces['heldout_accuracy']:.1f}"
    assert table1["best neuron, network trained without LCN"][1] == "78.5"

    rows = kit.table_rows(tree.find("table", id="neuron-table"))
    faces_rows = [r for r in rows if r[0].text() == "faces"]
    assert [r[2].text() for r in faces_rows] == [t["id"] for t in faces["top_neurons"]]
    for cells, record in zip(faces_rows, faces["top_neurons"], strict=True):
        assert float(cells[5].attrs["data-sort"]) == record["accuracy"]
        assert cells[5].text() == f"{100 * record['accuracy']:.1f}"
        assert float(cells[6].attrs["data-sort"]) == record["auc"]

    neuron = kit.parse(run / "report" / "neurons" / f"{kit.BEST}.html")
    text = neuron.text()
    assert "85.7" in text and "0.913" in text and "3.25" in text  # accuracy, AUC, optimal value
    assert any(img.attrs["src"] == f"../figures/optimal_{kit.BEST}.png" for img in neuron.iter("img"))
    assert any(img.attrs["src"] == "../figures/faces_histogram.png" for img in neuron.iter("img"))


def test_every_link_resolves_and_every_figure_is_copied(run, tmp_path):
    out = tmp_path / "elsewhere"
    write_report(run, out)
    assert check_links(out) > 40
    assert {p.name for p in (out / "neurons").iterdir()} >= {f"{kit.BEST}.html", "s2.pool.m1.y2.x2.html"}
    assert (out / "training_curves.png").stat().st_size > 10_000
    assert (out / "figures" / "stage1_filters.png").is_file()  # a run-level figure, shown once


def test_a_run_with_only_training_says_what_is_missing(tiny_run, tmp_path):
    run = kit.copy_run(tiny_run, tmp_path / "run")
    text = kit.parse(write_report(run)).text()
    assert "No concept evaluated yet" in text and f"catneuron evaluate {run}" in text
    assert check_links(run / "report") > 0

    (run / "metrics.jsonl").unlink()
    (run / "results").mkdir(exist_ok=True)
    (run / "results" / "broken.json").write_text("{not json")
    text = kit.parse(write_report(run)).text()
    assert "No training metrics" in text and "results/broken.json: unreadable" in text


def test_neuron_without_optimal_stimulus_says_so(run):
    write_report(run)
    text = kit.parse(run / "report" / "neurons" / "s2.pool.m1.y2.x2.html").text()
    assert f"catneuron visualize {run} --neuron s2.pool.m1.y2.x2" in text
    assert "catneuron invariance" in text


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        write_report(tmp_path / "nothing")
    with pytest.raises(UserError, match="not a run folder"):
        write_report(tmp_path)


HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>", "../../etc"]


def test_hostile_names_inject_nothing(run):
    for i, name in enumerate(HOSTILE):
        result = kit.concept_result(name, {"histogram": "figures/faces_histogram.png"}, best=f"s3.pool.m{i}.y0.x0")
        result["top_neurons"][1]["id"] = f'{name}"'
        (run / "results" / f"hostile{i}.json").write_text(json.dumps(result))
    (run / "config.json").write_text(json.dumps({"config": {"preset": HOSTILE[1]}, "data": HOSTILE[0]}))
    write_report(run)
    for page in pages(run / "report"):
        tree = kit.parse(page)
        scripts = list(tree.iter("script"))
        assert len(scripts) <= 1 and all("alert" not in s.text() for s in scripts), page
        assert not list(tree.iter("svg"))
        for node in tree.iter():
            assert not any(a.startswith("on") for a in node.attrs), (page, node.tag, node.attrs)
            assert node.attrs.get("src") != "x"
    text = kit.parse(run / "report" / "index.html").text()
    assert HOSTILE[0] in text and HOSTILE[1] in text  # shown, as text
    assert check_links(run / "report") > 0


def test_cli_report(run, tmp_path, capsys):
    from catneuron.cli.report import report

    report(run, tmp_path / "out")
    assert f"report: {tmp_path / 'out' / 'index.html'}" in capsys.readouterr().out


def test_report_of_a_real_evaluation(tiny_run, tmp_path):
    """`evaluate`'s own output, not a hand-written one, renders with its numbers and figures."""
    import numpy as np

    from catneuron.analysis.run_evaluation import evaluate_run
    from catneuron.data.labelled import LabelledImages

    run = kit.copy_run(tiny_run, tmp_path / "run")
    rng = np.random.default_rng(1)
    for i in range(8):
        kit.png(tmp_path / "train" / f"{i}.png", (16, 16), tuple(int(v) for v in rng.integers(0, 256, 3)))
    labels = np.array([1] * 12 + [0] * 20)
    images = rng.random((32, 1, 16, 16), dtype=np.float32) * (0.5 + 0.5 * labels[:, None, None, None])
    result = evaluate_run(run, LabelledImages(images, labels), "faces", n_filters=50,
                          training_data=str(tmp_path / "train"))
    index = write_report(run)
    text = kit.parse(index).text()
    assert f"{100 * result['best_neuron']['accuracy']:.1f}%" in text
    best = kit.parse(index.parent / "neurons" / f"{result['best_neuron']['id']}.html")
    assert any("histogram" in img.attrs["src"] for img in best.iter("img"))
    assert check_links(index.parent) > 20
