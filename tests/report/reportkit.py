"""Helpers for the report tests: a tiny real run folder with evaluate-shaped results, and an HTML tree reader."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from catneuron.analysis.evaluate import verdict
from catneuron.data.sources import ArraySource
from catneuron.model.config import PRESETS
from catneuron.train.trainer import Trainer

BEST = "s3.pool.m2.y1.x1"


def train_tiny(run: Path) -> Path:
    """A real run folder (config, checkpoint, metrics) in about a second: the tiny preset on random images."""
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 16, 16), dtype=np.uint8)
    Trainer(PRESETS["tiny"], ArraySource(images, "random 16x16"), run).fit(15, progress=False)
    return run


def record(neuron: str, accuracy: float, auc: float, threshold: float) -> dict:
    stage, sublayer = int(neuron[1]), neuron.split(".")[1]
    return {"id": neuron, "stage": stage, "sublayer": sublayer, "accuracy": accuracy, "threshold": threshold,
            "auc": auc}


def concept_result(concept: str, figures: dict[str, str] | None = None, best: str = BEST,
                   baselines: tuple[float, float] = (0.6612, 0.7403)) -> dict:
    """A results/<concept>.json as `catneuron evaluate` writes it (docs/architecture.md); `baselines`: the
    random-weights network's and the best linear filter's accuracy (their held-out scores 1 point lower)."""
    top = [record(best, 0.8571, 0.9132, 0.4375)] + [
        record(f"s{s}.{sub}.m{m}.y0.x0", 0.80 - 0.01 * i, 0.85 - 0.01 * i, 0.1 * i)
        for i, (s, sub, m) in enumerate([(3, "norm", 1), (2, "pool", 0), (1, "filter", 3), (2, "norm", 2)])]
    by_stage = [dict(r, heldout_accuracy=r["accuracy"] - 0.02) for r in (top[3], top[2], top[0])]
    by_stage.sort(key=lambda r: r["stage"])
    random_weights, linear = baselines
    detail = {
        "chance": {"id": f"always 'not {concept}'", "accuracy": 0.6479, "majority": "negative"},
        "random_weights": record("s2.norm.m0.y1.x1", random_weights, 0.7, 0.2) | {
            "heldout_accuracy": random_weights - 0.01},
        "linear_filter": {"id": "training image 17", "accuracy": linear, "threshold": 0.31, "auc": 0.8,
                          "heldout_accuracy": linear - 0.01, "n_filters": 1000},
        "best_first_stage": by_stage[0],
    }
    return {
        "concept": concept, "n_positive": 100, "n_negative": 184, "positive_fraction": 100 / 284,
        "best_neuron": top[0], "best_by_stage": by_stage, "heldout_accuracy": 0.8234,
        "heldout": {"units": [best, top[1]["id"]], "protocol": "chosen on one half, scored on the other"},
        "baselines": {"random_guess": 0.6479, "random_weights": random_weights, "linear_filter": linear,
                      "best_first_stage": by_stage[0]["accuracy"]},
        "baselines_detail": detail, "top_neurons": top, "figures": figures or {},
        "verdict": verdict(by_stage, detail),
        "inputs": {"positives": "/data/faces", "negatives": "/data/distractors", "positive_fraction_requested": None,
                   "checkpoint_step": 15, "training_data": "/data/train", "linear_filters": 1000,
                   "date": "2026-12-03T10:00:00+00:00"},
    }


def png(path: Path, size: tuple[int, int] = (60, 40), colour: tuple[int, int, int] = (200, 80, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def add_analyses(run: Path) -> Path:
    """faces: evaluated with figures, its best neuron visualized and probed for invariance; bodies: table only."""
    (run / "results").mkdir(exist_ok=True)
    png(run / "figures" / "faces_histogram.png")
    png(run / "figures" / "faces_top_stimuli.png", colour=(40, 80, 200))
    png(run / "figures" / "stage1_filters.png", colour=(90, 90, 90))
    png(run / "figures" / f"optimal_{BEST}.png", size=(80, 80))
    png(run / "figures" / f"invariance_{BEST}.png", size=(120, 40))
    figures = {"histogram": "figures/faces_histogram.png", "top_stimuli": "figures/faces_top_stimuli.png",
               "filters": "figures/stage1_filters.png"}
    (run / "results" / "faces.json").write_text(json.dumps(concept_result("faces", figures)))
    (run / "results" / "bodies.json").write_text(json.dumps(concept_result("bodies", best="s2.pool.m1.y2.x2")))
    (run / "results" / f"optimal_{BEST}.json").write_text(json.dumps(
        {"neuron": BEST, "value": 3.25, "norm": 1.0, "steps": 200, "history": list(range(50))}))
    (run / "results" / f"invariance_{BEST}.csv").write_text(
        "transform,amount,unit,mean,std,n\nscale,0.5,factor,0.8,0.1,10\nscale,1,factor,1.2,0.1,10\n")
    return run


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag: str | None = None):
        for c in self.children:
            if isinstance(c, Node):
                if tag is None or c.tag == tag:
                    yield c
                yield from c.iter(tag)

    def find(self, tag: str | None = None, **attrs: str) -> Node | None:
        return next((n for n in self.iter(tag) if all(n.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())),
                    None)


class _TreeBuilder(HTMLParser):
    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(path: Path) -> Node:
    builder = _TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    return builder.root


def table_rows(table: Node) -> list[list[Node]]:
    return [list(tr.iter("td")) for tr in table.find("tbody").iter("tr")]
