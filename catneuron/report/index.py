"""The report's front page: run summary, Table 1 per concept beside the paper, neuron table, training, config."""

from __future__ import annotations

from pathlib import Path

from catneuron.paper import PAPER, paper_concept
from catneuron.report.collect import Concept, Neuron, RunView
from catneuron.report.emergence_view import watch_section, watch_summary, watched_concepts
from catneuron.report.evidence import controls_line, evidence_table
from catneuron.report.html import Html, el, fixed, join, page, percent
from catneuron.report.parts import Assets, code, figure, missing, num_cell, record_cells, roles, value_html
from catneuron.store.runs import number

# (key in PAPER, label, how this run measures it); the first two labels say what this run's row is
TABLE1 = [
    ("random_guess", "chance (majority class)", lambda d: d.get("baselines", {}).get("random_guess")),
    ("random_weights", "same network, random weights", lambda d: d.get("baselines", {}).get("random_weights")),
    ("linear_filter", "best linear filter", lambda d: d.get("baselines", {}).get("linear_filter")),
    ("best_first_stage", "best first-stage neuron", lambda d: d.get("baselines", {}).get("best_first_stage")),
    ("best_neuron", "best neuron", lambda d: d.get("best_neuron", {}).get("accuracy")),
    ("heldout", "best neuron, chosen on one half, scored on the other", lambda d: d.get("heldout_accuracy")),
]
# Rows the paper measured on other runs: shown only where the paper has a number, with the command for it.
OTHER_RUNS = [
    ("no_lcn", "best neuron, network trained without LCN", "catneuron train --no-lcn"),
    ("no_faces", "best neuron, trained without faces", "catneuron ingest --exclude-faces, then train"),
]
BASELINES = {"random_weights": "random weights", "linear_filter": "best linear filter"}


def _get(data: dict, getter) -> object:
    try:
        return getter(data)
    except (AttributeError, KeyError, TypeError):  # a section missing, or not an object, in a malformed file
        return None


def _neuron_link(neuron_id: str, neurons: dict[str, Neuron], root: str = "") -> Html:
    neuron = neurons.get(neuron_id)
    return el("a", neuron_id, href=root + neuron.page) if neuron else el("span", neuron_id)


def chance_label(data: dict) -> str:
    """'chance (always 'not faces')': what always answering the majority class says, where recorded."""
    answer = _get(data, lambda d: d["baselines_detail"]["chance"]["id"])
    return f"chance ({answer})" if isinstance(answer, str) else TABLE1[0][1]


def stage_of(data: dict, neuron_id: object) -> object:
    """The stage a result file gives a neuron of its best_by_stage, best_neuron or top_neurons lists."""
    lists = [data.get("best_by_stage"), [data.get("best_neuron")], data.get("top_neurons")]
    for records in lists:
        for r in records if isinstance(records, list) else []:
            if isinstance(r, dict) and r.get("id") == neuron_id:
                return r.get("stage")
    return None


def beats_baselines(data: dict, key: str) -> bool:
    """A number is green only where it beats every baseline it must: the random-weights network and the best
    linear filter, on the same protocol (whole test set, or held-out)."""
    if key == "best_neuron":
        ours, bars = _get(data, TABLE1[4][2]), [_get(data, lambda d, k=k: d["baselines"][k]) for k in BASELINES]
    elif key == "heldout":
        ours = data.get("heldout_accuracy")
        bars = [_get(data, lambda d, k=k: d["baselines_detail"][k]["heldout_accuracy"]) for k in BASELINES]
    else:
        return False
    value, *limits = [number(v) for v in [ours, *bars]]
    return value is not None and all(bar is not None and value > bar for bar in limits)


def _verdict_line(concept: Concept, neurons: dict[str, Neuron]) -> list[object]:
    """The measured verdict: the best stage-2/3 neuron (held-out) against the better baseline."""
    d, found = concept.data, concept.data.get("verdict")
    v: dict = found if isinstance(found, dict) else {}
    upper, margin = v.get("upper_neuron"), number(v.get("margin"))
    if not isinstance(upper, str) or margin is None:
        return [el("b", "no verdict recorded", class_="worse"), " in ", code(f"results/{concept.file}"),
                " (re-run ", code("catneuron evaluate"), ")"]
    emerged = v.get("emerged") is True
    held = {k: number(_get(d, lambda x, k=k: x["baselines_detail"][k]["heldout_accuracy"])) for k in BASELINES}
    better = max((k for k in held if held[k] is not None), key=lambda k: held[k] or 0.0, default=None)
    stage = stage_of(d, upper)
    return [el("b", "a high-level neuron beats both baselines" if emerged else
               "no high-level neuron beats the baselines by 3 points", class_="better" if emerged else "worse"),
            f" — best stage-{stage if stage is not None else '?'} neuron ", _neuron_link(upper, neurons), ": ",
            el("b", f"{percent(v.get('upper_heldout_accuracy'))}%"), " held-out, against ",
            f"{percent(v.get('baseline_heldout_accuracy'))}%",
            f" for the better baseline ({BASELINES[better]})" if better else " for the better baseline",
            f" ({100 * margin:+.1f} points)."]


def headline(concept: Concept, neurons: dict[str, Neuron]) -> Html:
    """The verdict first; then the best neuron of any stage, with its stage and the baselines beside it, and
    the paper's top-layer neuron last."""
    d = concept.data
    parts: list[object] = [el("a", concept.name, href=f"#{concept.anchor}"), ": ", *_verdict_line(concept, neurons),
                           controls_line(concept)]
    best = d.get("best_neuron")
    if isinstance(best, dict) and best.get("id") not in (None, ""):
        stage = best.get("stage")
        scores = [f"{label} {percent(_get(d, lambda x, k=k: x['baselines'][k]))}%" for k, label in BASELINES.items()]
        scores.append(f"{chance_label(d)} {percent(_get(d, TABLE1[0][2]))}%")
        parts += [el("br"), "Best neuron of any stage: ", _neuron_link(str(best["id"]), neurons),
                  f" (stage {stage if stage is not None else '?'}): ",
                  el("span", f"{percent(best.get('accuracy'))}%", class_="better" if beats_baselines(
                      d, "best_neuron") else None),
                  " on the whole test set, against ", ", ".join(scores), "."]
        known = paper_concept(concept.name)
        if known and "best_neuron" in PAPER[known]:
            parts.append(f" The paper's best {known} neuron (top layer of its network): "
                         f"{PAPER[known]['best_neuron']:.1f}%.")
    else:
        parts += [el("br"), "no best neuron in ", concept.file]
    return el("li", *parts)


def _row_label(data: dict, key: str, label: str) -> str:
    if key == "random_guess":
        return chance_label(data)
    stage = _get(data, lambda d: d["best_neuron"]["stage"])
    if key == "best_neuron" and stage is not None:
        return f"best neuron (stage {stage})"
    return label


def table1(concept: Concept) -> Html:
    known = paper_concept(concept.name)
    paper = PAPER.get(known or "", {})
    rows = []
    for key, label, getter in TABLE1:
        value = _get(concept.data, getter)
        cls = "better" if beats_baselines(concept.data, key) else None
        rows.append(el("tr", el("td", _row_label(concept.data, key, label)), num_cell(value, percent(value)),
                       el("td", f"{paper[key]:.1f}" if key in paper else "—", class_="num"), class_=cls))
    for key, label, command in OTHER_RUNS:
        if key in paper:
            rows.append(el("tr", el("td", label), el("td", el("span", "another run: ", code(command), class_="note")),
                           el("td", f"{paper[key]:.1f}", class_="num")))
    heldout = concept.data.get("heldout")
    if isinstance(heldout, dict) and isinstance(heldout.get("protocol"), str):
        rows.append(el("tr", el("td", el("span", "held-out protocol: ", heldout["protocol"], class_="note"),
                                colspan=3)))
    paper_head = f"paper ({known})" if known else "paper"
    head = el("tr", el("th", "accuracy (%)"), el("th", "this run", class_="num"), el("th", paper_head, class_="num"))
    note = ("" if known else el("p", "The paper reports no numbers for this concept (it has faces, human bodies and "
                                     "cat faces).", class_="note"))
    green = el("p", "Green: beats both the random-weights network and the best linear filter on the same "
                    "protocol. The paper's best neuron is in the top layer of a network trained on 10M frames.",
               class_="note")
    return join([el("table", el("thead", head), el("tbody", join(rows))), green, note])


def best_neurons(concept: Concept, neurons: dict[str, Neuron]) -> Html:
    entries = [e for n in neurons.values() for e in n.entries if e.concept is concept and e.roles]
    entries.sort(key=lambda e: ("best neuron" not in e.roles, str(e.record.get("stage", ""))))
    if not entries:
        return missing("No best neuron listed in ", code(f"results/{concept.file}"), ".")
    head = el("tr", el("th", "neuron"), el("th", "stage"), el("th", "sublayer"), el("th", "accuracy (%)", class_="num"),
              el("th", "AUC", class_="num"), el("th", "threshold", class_="num"), el("th", "role"))
    rows = [el("tr", el("td", _neuron_link(str(e.record["id"]), neurons)), el("td", e.record.get("stage", "")),
               el("td", e.record.get("sublayer", "")), record_cells(e), el("td", roles(e))) for e in entries]
    return el("table", el("thead", head), el("tbody", join(rows)))


def evidence(concept: Concept, emergence: str | None) -> Html:
    """The evidence table, with the emergence curve beside it where the run watched this concept."""
    table = evidence_table(concept)
    if not emergence:
        return table
    curve = el("figure", el("a", el("img", src=emergence, alt="held-out accuracy per stage against images seen",
                                    class_="small"), href=emergence),
               el("figcaption", "emergence while training (", el("a", "watch", href="#watch"), ")"))
    return join([table, curve])


def concept_section(concept: Concept, neurons: dict[str, Neuron], assets: Assets, run: Path,
                    emergence: str | None = None) -> Html:
    d = concept.data
    counts = [f"{k.replace('_', ' ')} {d[k]}" for k in ("n_positive", "n_negative") if k in d]
    if number(d.get("positive_fraction")) is not None:
        counts.append(f"positives {percent(d['positive_fraction'])}%")
    figures = (el("div", join(figure(p, assets, "", small=True) for p in concept.figures), class_="grid")
               if concept.figures else
               missing("No histogram or top-stimuli figure for this concept in ", code(f"{run}/figures"), "."))
    inputs = d.get("inputs")
    recorded = (el("details", el("summary", "computed from (recorded by evaluate)"), value_html(inputs))
                if isinstance(inputs, dict) else
                missing("This result does not record its inputs (test folders, checkpoint step, linear filters); "
                        "re-run ", code("catneuron evaluate"), "."))
    return el("section", el("h2", "Concept: ", concept.name),
              el("p", "test set: ", ", ".join(counts) or "sizes not recorded", " — from ",
                 code(f"results/{concept.file}"), class_="sub"),
              el("h3", "Table 1: classification accuracy"), table1(concept),
              el("h3", "Evidence: the best unit per stage against random networks, and the probe"),
              evidence(concept, emergence),
              el("h3", "Best neurons"), best_neurons(concept, neurons),
              el("h3", "Figures"), figures, el("h3", "Inputs"), recorded, class_="card", id=concept.anchor)


def neuron_table(view: RunView) -> Html:
    names = ["concept", "rank", "neuron", "stage", "sublayer", "accuracy (%)", "AUC", "threshold", "role"]
    numeric = {"rank", "stage", "accuracy (%)", "AUC", "threshold"}
    head = el("tr", join(el("th", n, class_="num" if n in numeric else None) for n in names))
    order = {id(c): i for i, c in enumerate(view.concepts)}
    entries = sorted(((n, e) for n in view.neurons for e in n.entries),
                     key=lambda ne: (order[id(ne[1].concept)], ne[1].rank or len(view.neurons) + 1))
    rows = [el("tr", el("td", el("a", e.concept.name, href=f"#{e.concept.anchor}")),
               num_cell(e.rank, e.rank if e.rank is not None else ""),
               el("td", el("a", neuron.id, href=neuron.page, class_="neuron")),
               num_cell(e.record.get("stage"), e.record.get("stage", "")),
               el("td", e.record.get("sublayer", "")), record_cells(e), el("td", roles(e)))
            for neuron, e in entries]
    for neuron in view.neurons:
        if not neuron.entries:  # a neuron visualized or probed for invariance without being listed by a concept
            rows.append(el("tr", el("td", "—"), num_cell(None, ""), el("td", el("a", neuron.id, href=neuron.page,
                           class_="neuron")), num_cell(None, ""), el("td", ""), join(num_cell(None, "—") for _ in
                           range(3)), el("td", el("span", "no concept", class_="tag"))))
    if not rows:
        return Html("")
    table = el("table", el("thead", head), el("tbody", join(rows)), class_="sortable", id="neuron-table")
    return el("section", el("h2", "All listed neurons"),
              el("p", "Click a column title to sort. Each neuron links to its own page.", class_="note"),
              table, class_="card", id="neurons")


def training_section(view: RunView, curves: str | None) -> Html:
    if not view.metrics:
        return el("section", el("h2", "Training"),
                  missing("No training metrics (", code("metrics.jsonl"), ") in this run: train it with ",
                          code(f"catneuron train --data DATA --out {view.run}"), "."),
                  class_="card", id="training")
    last = view.metrics[-1]
    batch = _get(view.config or {}, lambda c: c["config"]["train"]["batch_size"])
    facts = {"steps": last.get("step", "—"), "log lines": len(view.metrics),
             "training time (s)": fixed(last.get("elapsed_s"), 1),
             "throughput (images/s)": fixed(last.get("images_per_s"), 0),
             "final objective": fixed(last.get("loss"), 4)}
    if number(batch) is not None and number(last.get("step")) is not None:
        facts["images seen"] = f"{int(batch * last['step']):,}"
    picture = (el("figure", el("img", src=curves, alt="training curves"), el("figcaption", "training curves"))
               if curves else missing("No plottable loss values in metrics.jsonl."))
    return el("section", el("h2", "Training"), value_html(facts), picture, class_="card", id="training")


def other_figures(view: RunView, assets: Assets) -> Html:
    if not view.other_figures:
        return Html("")
    return el("section", el("h2", "More figures of this run"),
              el("div", join(figure(p, assets, "", small=True) for p in view.other_figures), class_="grid"),
              class_="card", id="figures")


def config_section(view: RunView) -> Html:
    if view.config is None:
        return el("section", el("h2", "Configuration"),
                  missing("No readable ", code("config.json"), " in this run."), class_="card", id="config")
    data = view.config.get("data")
    config = view.config.get("config", view.config)
    return el("section", el("h2", "Configuration"),
              el("p", "trained on: ", code(data if data is not None else "not recorded")),
              value_html(config), class_="card", id="config")


def status(view: RunView) -> Html:
    """What the run has and lacks, with the command for each missing analysis."""
    notes = []
    if not view.concepts:
        notes.append(missing("No concept evaluated yet: find class-selective neurons with ",
                             code(f"catneuron evaluate {view.run} --positives DIR --negatives DIR --concept NAME"),
                             "."))
    if view.concepts and not any(n.optimal_figure for n in view.neurons):
        notes.append(missing("No optimal stimulus computed: ",
                             code(f"catneuron visualize {view.run} --neuron ID"), "."))
    if view.concepts and not any(n.invariance_figure or n.invariance_csv for n in view.neurons):
        notes.append(missing("No invariance curves computed: ",
                             code(f"catneuron invariance {view.run} --neuron ID --images DIR"), "."))
    notes += [missing("Skipped: ", p) for p in view.problems]
    return join(notes)


def index_page(view: RunView, assets: Assets, curves: str | None, emergence: str | None = None) -> Html:
    neurons = {n.id: n for n in view.neurons}
    title = view.run.resolve().name
    watched = watched_concepts(view)
    lines = [headline(c, neurons) for c in view.concepts]
    intro = el("section", el("h2", "Summary"), el("ul", join(lines), class_="headline") if lines else Html(""),
               watch_summary(view), status(view), class_="card", id="summary")
    nav = [(c.name, f"#{c.anchor}") for c in view.concepts]
    nav += [("neurons", "#neurons")] if view.neurons else []
    nav += [("watch", "#watch")] if view.watch else []
    nav += [("training", "#training")] + ([("figures", "#figures")] if view.other_figures else [])
    nav += [("config", "#config")]
    body = join([el("h1", "Run ", title), el("p", code(str(view.run.resolve())), class_="sub"), intro,
                 join(concept_section(c, neurons, assets, view.run, emergence if c.name in watched else None)
                      for c in view.concepts),
                 neuron_table(view), watch_section(view, emergence), training_section(view, curves),
                 other_figures(view, assets),
                 config_section(view)])
    return page(f"catneuron report: {title}", body, root="", nav=nav, script=bool(view.neurons))
