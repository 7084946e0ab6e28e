"""One page per neuron: its scores for every concept that lists it, and every picture computed of it."""

from __future__ import annotations

from pathlib import Path

from catneuron.report.collect import Neuron, RunView
from catneuron.report.html import Html, el, join, page
from catneuron.report.parts import Assets, code, figure, missing, num_cell, record_cells, roles, value_html

ROOT = "../"  # neuron pages live in neurons/


def _link(neuron: Neuron) -> Html:
    return el("a", neuron.id, href=ROOT + neuron.page)


def scores(neuron: Neuron) -> Html:
    if not neuron.entries:
        return el("p", "No evaluated concept lists this neuron.", class_="note")
    head = el("tr", el("th", "concept"), el("th", "rank", class_="num"), el("th", "accuracy (%)", class_="num"),
              el("th", "AUC", class_="num"), el("th", "threshold", class_="num"), el("th", "role"))
    rows = [el("tr", el("td", el("a", e.concept.name, href=f"{ROOT}index.html#{e.concept.anchor}")),
               num_cell(e.rank, e.rank if e.rank is not None else "—"), record_cells(e), el("td", roles(e)))
            for e in neuron.entries]
    return el("table", el("thead", head), el("tbody", join(rows)))


def concept_figures(neuron: Neuron, assets: Assets) -> Html:
    """The histogram and top stimuli a concept's evaluation drew of this neuron (every best-of-stage unit; a
    result without per-neuron figures has them for its best neuron only)."""
    parts = []
    for e in neuron.entries:
        pictures = e.concept.neuron_figures.get(neuron.id) or (e.concept.figures if "best neuron" in e.roles else [])
        if pictures:
            parts.append(el("h3", e.concept.name, ": activations over the test set"))
            parts.append(el("div", join(figure(p, assets, ROOT, small=True) for p in pictures), class_="grid"))
    if not parts:
        return Html("")
    return el("section", el("h2", "Selectivity"), join(parts), class_="card")


def optimal(neuron: Neuron, assets: Assets, run: Path) -> Html:
    parts: list[object] = [el("h2", "Optimal stimulus")]
    if neuron.optimal_figure:
        parts.append(figure(neuron.optimal_figure, assets, ROOT))
    if neuron.optimal:
        shown = {k: v if not isinstance(v, (list, dict)) or len(v) <= 8 else f"({len(v)} values)"
                 for k, v in neuron.optimal.items()}
        parts.append(value_html(shown))
    if not (neuron.optimal_figure or neuron.optimal):
        parts.append(missing("Not computed: ", code(f"catneuron visualize {run} --neuron {neuron.id}"), "."))
    return el("section", *parts, class_="card", id="optimal")


def invariance(neuron: Neuron, assets: Assets, run: Path) -> Html:
    parts: list[object] = [el("h2", "Invariance")]
    if neuron.invariance_figure:
        parts.append(figure(neuron.invariance_figure, assets, ROOT))
    if neuron.invariance_csv:
        href = ROOT + assets.add(neuron.invariance_csv, "data")
        rows = neuron.invariance_rows
        table = Html("")
        if rows:
            head = el("tr", join(el("th", c) for c in rows[0]))
            body = join(el("tr", join(el("td", c) for c in r)) for r in rows[1:])
            table = el("table", el("thead", head), el("tbody", body))
        parts.append(el("details", el("summary", f"data ({max(len(rows) - 1, 0)} rows shown)"), table))
        parts.append(el("p", el("a", "download the CSV", href=href), class_="note"))
    if not (neuron.invariance_figure or neuron.invariance_csv):
        parts.append(missing("Not computed: ",
                             code(f"catneuron invariance {run} --neuron {neuron.id} --images DIR"), "."))
    return el("section", *parts, class_="card", id="invariance")


def neighbours(neuron: Neuron, view: RunView) -> Html:
    """Links to the other neurons each concept lists, and to the previous and next page."""
    by_id = {n.id: n for n in view.neurons}
    parts = []
    for e in neuron.entries:
        others = [n for n in dict.fromkeys(str(x.record["id"]) for m in view.neurons for x in m.entries
                                          if x.concept is e.concept) if n != neuron.id]
        if others:
            parts.append(el("p", f"Other {e.concept.name} neurons: ",
                            join((_link(by_id[o]) for o in others), ", ")))
    i = view.neurons.index(neuron)
    prev = el("span", "← ", _link(view.neurons[i - 1])) if i > 0 else el("span")
    nxt = el("span", _link(view.neurons[i + 1]), " →") if i + 1 < len(view.neurons) else el("span")
    return el("section", el("h2", "More neurons"), join(parts), el("div", prev, nxt, class_="pager"), class_="card")


def neuron_page(neuron: Neuron, view: RunView, assets: Assets) -> Html:
    first = neuron.entries[0].record if neuron.entries else {}
    where = ", ".join(f"{k} {first[k]}" for k in ("stage", "sublayer") if k in first)
    body = join([el("h1", "Neuron ", neuron.id), el("p", where or "—", " · run ", code(view.run.resolve().name),
                                                    class_="sub"),
                 el("section", el("h2", "Scores"), scores(neuron), class_="card", id="scores"),
                 concept_figures(neuron, assets), optimal(neuron, assets, view.run),
                 invariance(neuron, assets, view.run), neighbours(neuron, view)])
    nav = [("index", f"{ROOT}index.html"), ("all neurons", f"{ROOT}index.html#neurons")]
    return page(f"neuron {neuron.id}", body, root=ROOT, nav=nav)
