"""Reading a run folder into what the report shows, tolerating whatever analyses are missing or malformed.

Nothing here trusts the files: names and values are kept as data for the page builder to escape, figure
paths must lie inside the run, and a file that cannot be read becomes a line in `problems`, not a crash.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from catneuron.errors import UserError
from catneuron.paper import PAPER, paper_concept
from catneuron.report.html import slug
from catneuron.store import runs

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
CONCEPT_FIGURES = {"histogram": "activation histogram", "top_stimuli": "top stimuli"}
# Figures `evaluate` lists with a concept that show the whole run: shown once, with the run's other figures.
RUN_FIGURES = {"filters", "training_curves", "emergence"}
TRAINING_CURVES = "training_curves.png"  # drawn afresh from metrics.jsonl by the report itself
EMERGENCE = "emergence.png"  # the same, from the `--watch` records


@dataclass
class Picture:
    title: str
    source: Path  # inside the run folder


@dataclass
class Concept:
    name: str
    file: str  # results/<file>
    data: dict
    anchor: str
    figures: list[Picture] = field(default_factory=list)
    neuron_figures: dict[str, list[Picture]] = field(default_factory=dict)  # histogram, top stimuli per neuron


@dataclass
class Entry:
    """A neuron as one concept's evaluation lists it."""

    concept: Concept
    record: dict  # {id, stage, sublayer, accuracy, threshold, auc}
    rank: int | None = None  # 1-based place in top_neurons
    roles: list[str] = field(default_factory=list)


@dataclass
class Neuron:
    id: str
    page: str  # relative to the report folder
    entries: list[Entry] = field(default_factory=list)
    optimal_figure: Picture | None = None
    optimal: dict | None = None
    invariance_figure: Picture | None = None
    invariance_csv: Path | None = None
    invariance_rows: list[list[str]] = field(default_factory=list)


@dataclass
class RunView:
    run: Path
    config: dict | None
    metrics: list[dict]
    concepts: list[Concept]
    neurons: list[Neuron]
    problems: list[str]
    other_figures: list[Picture] = field(default_factory=list)  # figures/ images no concept or neuron shows
    watch: list[dict] = field(default_factory=list)  # the `--watch` records of metrics.jsonl


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` resolves inside `root` (a concept named '../x' or holding a NUL byte does not)."""
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _picture(run: Path, relative: object, title: str) -> Picture | None:
    """A figure a result file names: only an existing image file inside the run counts."""
    if not isinstance(relative, str) or not relative:
        return None
    path = run / relative
    if path.suffix.lower() not in IMAGE_SUFFIXES or not _inside(path, run) or not path.is_file():
        return None
    return Picture(title, path)


def _read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"results/{path.name}: unreadable ({type(e).__name__})")
        return None
    if not isinstance(data, dict):
        problems.append(f"results/{path.name}: not a JSON object")
        return None
    return data


def _concept_figures(run: Path, figures: Path, concept: Concept) -> None:
    """The concept's own pictures: those its result file names, and <concept>_histogram.png and the like."""
    named = concept.data.get("figures")
    candidates = [(str(k), rel) for k, rel in named.items() if k not in RUN_FIGURES] if isinstance(named, dict) else []
    for stem in dict.fromkeys((concept.name, Path(concept.file).stem)):
        for key in CONCEPT_FIGURES:
            path = figures / f"{stem}_{key}.png"
            if _inside(path, figures):
                candidates.append((key, str(path.relative_to(run))))
    seen: set[Path] = set()
    for key, rel in candidates:
        picture = _picture(run, rel, CONCEPT_FIGURES.get(key, key.replace("_", " ")))
        if picture and picture.source.resolve() not in seen:
            seen.add(picture.source.resolve())
            concept.figures.append(picture)


def _neuron_figures(run: Path, concept: Concept) -> None:
    """The histogram and top stimuli `evaluate` drew of each best-of-stage neuron (result["neuron_figures"])."""
    named = concept.data.get("neuron_figures")
    for neuron, pictures in named.items() if isinstance(named, dict) else []:
        found = [_picture(run, rel, CONCEPT_FIGURES.get(str(k), str(k).replace("_", " ")))
                 for k, rel in pictures.items()] if isinstance(pictures, dict) else []
        if found := [p for p in found if p]:
            concept.neuron_figures[str(neuron)] = found


def _concept_order(concept: Concept) -> tuple[int, str]:
    known = paper_concept(concept.name)
    return (list(PAPER).index(known) if known else len(PAPER), concept.name)


def _records(concept: Concept) -> list[tuple[dict, int | None, str | None]]:
    """(record, rank, role) for every neuron a concept's evaluation lists, best first."""
    data = concept.data
    out: list[tuple[dict, int | None, str | None]] = []
    if isinstance(data.get("best_neuron"), dict):
        out.append((data["best_neuron"], None, "best neuron"))
    top = data.get("top_neurons")
    for i, record in enumerate(top if isinstance(top, list) else [], start=1):
        out.append((record, i, None))
    by_stage = data.get("best_by_stage")
    for record in by_stage if isinstance(by_stage, list) else []:
        stage = record.get("stage") if isinstance(record, dict) else None
        out.append((record, None, f"best of stage {stage}" if stage is not None else "best of its stage"))
    if isinstance(data.get("heldout"), dict):
        out.append((data["heldout"], None, "held-out pick"))
    return [(r, rank, role) for r, rank, role in out if isinstance(r, dict) and r.get("id") not in (None, "")]


def _neuron(neurons: dict[str, Neuron], neuron_id: str) -> Neuron:
    if neuron_id not in neurons:
        neurons[neuron_id] = Neuron(neuron_id, f"neurons/{slug(neuron_id)}.html")
    return neurons[neuron_id]


def _add_entries(neurons: dict[str, Neuron], concept: Concept) -> None:
    for record, rank, role in _records(concept):
        neuron = _neuron(neurons, str(record["id"]))
        entry = next((e for e in neuron.entries if e.concept is concept), None)
        if entry is None:
            entry = Entry(concept, record)
            neuron.entries.append(entry)
        elif "held-out pick" in entry.roles and role != "held-out pick":
            entry.record = record  # the held-out record's accuracy is on half the test set; prefer the full one
        if rank is not None and entry.rank is None:
            entry.rank = rank
        if role and role not in entry.roles:
            entry.roles.append(role)


def _read_csv(path: Path, limit: int = 200) -> list[list[str]]:
    with open(path, newline="", errors="replace") as f:
        return list(itertools.islice(csv.reader(f), limit + 1))


def _neuron_files(run: Path, figures: Path, results: Path, neurons: dict[str, Neuron], problems: list[str]) -> None:
    """Optimal stimuli and invariance curves: figures/optimal_<id>.png, results/optimal_<id>.json and the like."""
    for path in sorted(figures.glob("*.png")):
        if m := re.fullmatch(r"(optimal|invariance)_(.+)\.png", path.name):
            kind, neuron = m.groups()
            picture = Picture("optimal stimulus" if kind == "optimal" else "invariance curves", path)
            setattr(_neuron(neurons, neuron), f"{kind}_figure", picture)
    for path in sorted(results.glob("invariance_*.csv")):
        neuron = _neuron(neurons, path.name[len("invariance_"):-len(".csv")])
        neuron.invariance_csv = path
        try:
            neuron.invariance_rows = _read_csv(path)
        except OSError as e:
            problems.append(f"results/{path.name}: unreadable ({type(e).__name__})")


def _other_figures(view: RunView, figures: Path) -> list[Picture]:
    shown = {p.source.resolve() for c in view.concepts for p in c.figures}
    shown |= {p.source.resolve() for c in view.concepts for ps in c.neuron_figures.values() for p in ps}
    shown |= {p.source.resolve() for n in view.neurons for p in (n.optimal_figure, n.invariance_figure) if p}
    if view.metrics:
        shown.add((figures / TRAINING_CURVES).resolve())
    if view.watch:
        shown.add((figures / EMERGENCE).resolve())
    return [Picture(p.stem.replace("_", " "), p) for p in sorted(figures.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.resolve() not in shown]


def collect(run: str | Path) -> RunView:
    """Everything the report shows about `run`; raises UserError only when `run` is not a run folder at all."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    marks = (runs.CONFIG, runs.METRICS, runs.CHECKPOINT, "results")
    if not any((run / name).exists() for name in marks):
        raise UserError(f"{run}: not a run folder (no {', '.join(marks)})")
    problems: list[str] = []
    config = None
    if (run / runs.CONFIG).is_file():
        config = _read_json(run / runs.CONFIG, problems)
    figures, results = runs.figures_dir(run), runs.results_dir(run)
    concepts: list[Concept] = []
    neurons: dict[str, Neuron] = {}
    optimal: dict[str, dict] = {}
    for path in sorted(results.glob("*.json")):
        data = _read_json(path, problems)
        if data is None:
            continue
        if "concept" in data:
            name = str(data["concept"])
            concept = Concept(name, path.name, data, f"concept-{slug(path.stem)}")
            _concept_figures(run, figures, concept)
            _neuron_figures(run, concept)
            concepts.append(concept)
        elif path.name.startswith("optimal_"):
            optimal[path.stem[len("optimal_"):]] = data
    concepts.sort(key=_concept_order)
    for concept in concepts:
        _add_entries(neurons, concept)
    for neuron_id, data in optimal.items():
        _neuron(neurons, neuron_id).optimal = data
    _neuron_files(run, figures, results, neurons, problems)
    view = RunView(run, config, runs.read_metrics(run), concepts, list(neurons.values()), problems)
    view.watch = [row for row in runs.read_rows(run) if "record" in row]
    view.other_figures = _other_figures(view, figures)
    return view
