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
    assert table1["chance (always 'not faces')"] == (f"{100 * b['random_guess']:.1f}", "64.8")
    assert table1["best linear filter"] == (f"{100 * b['linear_filter']:.1f}", "74.0")
    assert table1["best first-stage neuron"] == (f"{100 * b['best_first_stage']:.1f}", "71.0")
    assert table1["best neuron (stage 3)"] == (f"{100 * faces['best_neuron']['accuracy']:.1f}", "81.7")
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


@pytest.mark.slow
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


def summary_lines(index: Path) -> list[kit.Node]:
    return list(kit.parse(index).find("section", id="summary").find("ul").iter("li"))


def test_summary_leads_with_the_verdict_and_greens_only_what_beats_the_baselines(run):
    """The issue's run: a stage-1 unit at 87.3% beside random weights at 88.0% and a linear filter at 91.5%."""
    losing = kit.concept_result("faces", baselines=(0.880, 0.915))
    losing["best_neuron"] = kit.record("s1.filter.m6.y0.x12", 0.873, 0.9, 0.1)
    losing["top_neurons"].insert(0, losing["best_neuron"])
    (run / "results" / "faces.json").write_text(json.dumps(losing))
    index = write_report(run)
    first = summary_lines(index)[0].text()
    assert first.startswith("faces: no high-level neuron beats the baselines by 3 points — best stage-3 neuron")
    assert "for the better baseline (best linear filter)" in first
    best_part = first[first.index("Best neuron of any stage"):]
    assert best_part.startswith("Best neuron of any stage: s1.filter.m6.y0.x12 (stage 1): 87.3%")
    assert best_part.index("random weights 88.0%") < best_part.index("best linear filter 91.5%") < best_part.index(
        "The paper's best faces neuron (top layer")
    tree = kit.parse(index)
    faces_parts = [tree.find("section", id="concept-faces"), summary_lines(index)[0]]
    assert [n.text() for part in faces_parts for n in part.iter() if "better" in n.attrs.get("class", "")] == []
    rows = {cells[0].text(): cells for cells in kit.table_rows(tree.find("section", id="concept-faces").find("table"))
            if len(cells) == 3}
    assert "best neuron (stage 1)" in rows

    bodies = summary_lines(index)[1].text()  # beats both baselines: the verdict and the number are green
    assert bodies.startswith("bodies: a high-level neuron beats both baselines — best stage-2 neuron")
    section = kit.parse(index).find("section", id="concept-bodies")
    green_rows = [tr.find("td").text() for tr in section.find("tbody").iter("tr") if tr.attrs.get("class") == "better"]
    assert green_rows == ["best neuron (stage 2)", "best neuron, chosen on one half, scored on the other"]


def test_a_result_without_a_verdict_says_so(run):
    old = kit.concept_result("faces")
    del old["verdict"], old["baselines_detail"], old["inputs"]
    (run / "results" / "faces.json").write_text(json.dumps(old))
    index = write_report(run)
    assert summary_lines(index)[0].text().startswith("faces: no verdict recorded in results/faces.json")
    text = kit.parse(index).find("section", id="concept-faces").text()
    assert "chance (majority class)" in text and "does not record its inputs" in text


def test_every_best_of_stage_page_shows_its_figures_and_the_inputs_are_shown(run):
    faces = json.loads((run / "results" / "faces.json").read_text())
    stage2 = faces["best_by_stage"][1]["id"]
    for kind in ("histogram", "top_stimuli"):
        kit.png(run / "figures" / f"faces_{stage2}_{kind}.png", colour=(10, 200, 10))
    kit.png(run / "figures" / f"optimal_{stage2}.png", size=(80, 80))
    faces["neuron_figures"] = {stage2: {k: f"figures/faces_{stage2}_{k}.png" for k in ("histogram", "top_stimuli")},
                               "s9.pool.m0.y0.x0": {"histogram": "../outside.png"}}
    (run / "results" / "faces.json").write_text(json.dumps(faces))
    index = write_report(run)
    page = kit.parse(index.parent / "neurons" / f"{stage2}.html")
    sources = {img.attrs["src"] for img in page.iter("img")}
    assert {f"../figures/faces_{stage2}_histogram.png", f"../figures/faces_{stage2}_top_stimuli.png",
            f"../figures/optimal_{stage2}.png"} <= sources
    assert "best of stage 2" in page.text()
    inputs = kit.parse(index).find("section", id="concept-faces").find("details").text()
    assert "checkpoint_step" in inputs and "/data/faces" in inputs and "linear_filters" in inputs
    assert check_links(index.parent) > 40


def test_report_writes_a_fresh_site(run, tmp_path):
    write_report(run)
    stale = run / "report" / "neurons" / "s2.pool.m1.y2.x2.html"
    assert stale.is_file()
    (run / "results" / "bodies.json").unlink()  # re-evaluated: that neuron is no longer listed
    (run / "report" / "notes.txt").write_text("left by an earlier report")
    write_report(run)
    assert not stale.exists() and not (run / "report" / "notes.txt").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".report")]  # no staging folder left behind
    check_links(run / "report")

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("not a report")
    with pytest.raises(UserError, match="not a catneuron report"):
        write_report(run, foreign)
    assert (foreign / "thesis.tex").is_file()
