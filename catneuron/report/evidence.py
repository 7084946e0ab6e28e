"""The evidence behind a concept's verdict, per stage: the best unit against the null over random networks
(mean, sd, max, where the unit stands) and the linear probe trained against random weights.

`catneuron evaluate --null-seeds S --probe` writes both into results/<concept>.json (analysis/null.py,
analysis/probe.py); a result without them says how to compute them. Values come from a file: each is read
with `number` and shown as a dash when it is missing or malformed.
"""

from __future__ import annotations

from catneuron.report.collect import Concept
from catneuron.report.html import Html, el, join, percent
from catneuron.report.parts import code, missing
from catneuron.store.runs import number


def _rows(data: dict, key: str) -> dict[int, dict]:
    """`data[key]["by_stage"]` keyed by stage; records that are not objects with an integer stage are dropped."""
    section = data.get(key)
    rows = section.get("by_stage") if isinstance(section, dict) else None
    return {r["stage"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("stage"), int)
            and not isinstance(r.get("stage"), bool)} if isinstance(rows, list) else {}


def _null(row: dict) -> dict:
    null = row.get("null")
    return null if isinstance(null, dict) else {}


def standing_cells(row: dict) -> Html:
    """Where the trained unit stands in the null: sd from its mean ("+2.1", or "no spread"), and whether it
    beats the null's maximum (green yes, amber no)."""
    if not row:
        return join([el("td", "no null computed", colspan=2)])
    above = number(row.get("sd_above_mean"))
    beats = row.get("beats_max")
    return join([el("td", "no spread" if above is None else f"{above:+.1f}", class_="num"),
                 el("td", {True: "yes", False: "no"}.get(beats, "—") if isinstance(beats, bool) else "—",
                    class_={True: "better", False: "worse"}.get(beats) if isinstance(beats, bool) else None)])


def _cell(value: object, text: str | None = None, cls: str | None = None) -> Html:
    return el("td", percent(value) if text is None else text, class_=f"num {cls}" if cls else "num")


def evidence_table(concept: Concept) -> Html:
    """One row per stage: the best unit's held-out accuracy, the null over random networks, where the unit
    stands in it, and the probe of the trained network against that of a random one."""
    d = concept.data
    nulls, probes = _rows(d, "null"), _rows(d, "probe")
    best = {r["stage"]: r for r in d.get("best_by_stage") or [] if isinstance(r, dict)
            and isinstance(r.get("stage"), int)} if isinstance(d.get("best_by_stage"), list) else {}
    command = code(f"catneuron evaluate RUN --positives DIR --negatives DIR --concept {concept.name} "
                   "--null-seeds 5 --probe")
    if not nulls and not probes:
        return missing("No null over random networks and no probe in ", code(f"results/{concept.file}"),
                       ": without them the best unit's margin may be the luck of a maximum over many units; "
                       "compute them with ", command, ".")
    seeds = d["null"].get("seeds") if isinstance(d.get("null"), dict) else None
    n = len(seeds) if isinstance(seeds, list) else None
    head = el("tr", el("th", "stage"), el("th", "best unit"), el("th", "held-out (%)", class_="num"),
              el("th", "null mean (%)", class_="num"), el("th", "null sd", class_="num"),
              el("th", "null max (%)", class_="num"), el("th", "sd from null mean", class_="num"),
              el("th", "beats null max"),
              el("th", "probe trained (%)", class_="num"), el("th", "probe random (%)", class_="num"))
    rows = []
    for stage in sorted(set(best) | set(nulls) | set(probes)):
        unit, null, probe = best.get(stage, {}), nulls.get(stage, {}), probes.get(stage, {})
        spread = number(_null(null).get("sd"))
        trained, random = number(probe.get("trained")), number(probe.get("random_weights"))
        lead = None if trained is None or random is None else ("better" if trained > random else "worse")
        rows.append(el("tr", el("td", stage), el("td", unit.get("id", "—")),
                       _cell(unit.get("heldout_accuracy", null.get("trained"))),
                       _cell(_null(null).get("mean")),
                       _cell(None, "—" if spread is None else f"{100 * spread:.1f}"),
                       _cell(_null(null).get("max")),
                       standing_cells(null),
                       _cell(probe.get("trained"), cls=lead), _cell(probe.get("random_weights"))))
    networks = f"{n} random-weights networks" if n else "random-weights networks"
    notes = [el("p", f"Null: the best unit of each stage of {networks} (different seeds), scanned with "
                     "the same code and held-out protocol, in held-out accuracy (sd in points); the trained unit is "
                     "placed in that distribution. "
                     "Probe: a held-out logistic regression on all of a stage's units, for the trained network "
                     "and for random weights (how much of the concept the stage holds at all).", class_="note")]
    if not nulls:
        notes.append(missing("No null over random networks: add ", code("--null-seeds 5"), " to ", command, "."))
    if not probes:
        notes.append(missing("No probe: add ", code("--probe"), " to ", command, "."))
    return join([el("table", el("thead", head), el("tbody", join(rows)), class_="evidence"), *notes])


def controls_line(concept: Concept) -> Html:
    """The sentence `evaluate` wrote about the controls (verdict.controls_text), for the headline."""
    v = concept.data.get("verdict")
    text = v.get("controls_text") if isinstance(v, dict) else None
    return el("span", " ", text, class_="controls") if isinstance(text, str) and text else Html("")
