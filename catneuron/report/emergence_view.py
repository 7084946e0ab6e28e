"""The report's view of a watched run (`train --watch`): the verdict at the best point and at the end, the
emergence figure, and the curve's points."""

from __future__ import annotations

from catneuron.analysis.emergence import (
    concepts_of,
    curve,
    emergence_verdict,
    latest_baselines,
    set_size,
    watch_records,
    wilson,
)
from catneuron.report.collect import RunView
from catneuron.report.html import Html, el, join, percent


def watch_summary(view: RunView) -> Html:
    """One paragraph per watched concept, for the summary: where the curve was best and where it ended."""
    records, baselines = watch_records(view.watch), latest_baselines(view.watch)
    verdicts = [emergence_verdict(records, baselines, c) for c in concepts_of(records)]
    return join(el("p", v["text"], class_="watch-verdict") for v in verdicts if v)


def watched_concepts(view: RunView) -> list[str]:
    return concepts_of(watch_records(view.watch))


def with_interval(value: float | None, n: int | None) -> str:
    """'52.3 (44.1-60.2)': a held-out accuracy in percent with its 95% Wilson interval on n images."""
    if value is None or not n:
        return percent(value)
    low, high = wilson(value, n)
    return f"{percent(value)} ({percent(low)}-{percent(high)})"


def points_table(records: list[dict], concept: str, n: int | None = None) -> Html:
    """The curve's points: per stage, the held-out accuracy and, with the watch set's size n, its interval."""
    stages = curve(records, concept)
    by_images: dict[int, dict[int, float]] = {}
    for stage, (xs, ys) in stages.items():
        for x, y in zip(xs, ys, strict=True):
            by_images.setdefault(x, {})[stage] = y
    what = " (95% interval)" if n else ""
    head = el("tr", el("th", "images seen", class_="num"),
              join(el("th", f"stage {s} held-out (%){what}", class_="num") for s in sorted(stages)))
    rows = [el("tr", el("td", f"{images:,}", class_="num"),
               join(el("td", with_interval(values.get(s), n), class_="num") for s in sorted(stages)))
            for images, values in sorted(by_images.items())]
    return el("table", el("thead", head), el("tbody", join(rows)))


def baselines_line(baselines: dict | None, concept: str) -> Html:
    base = (baselines or {}).get("concepts", {}).get(concept)
    if not isinstance(base, dict):
        return Html("")
    return el("p", f"baselines on the watch set ({base.get('n_positive')} positives, {base.get('n_negative')} "
                   f"negatives), held-out: random guess {percent(base.get('random_guess'))}%, random weights "
                   f"{percent(base.get('random_weights'))}%, best of {base.get('n_filters', 0):,} linear filters "
                   f"{percent(base.get('linear_filter'))}%; the bar (better baseline + 3 points) "
                   f"{percent(base.get('bar'))}%", class_="note")


def watch_section(view: RunView, emergence: str | None) -> Html:
    """The emergence figure and, per concept, the verdict, the baselines and the points of the curve."""
    records = watch_records(view.watch)
    if not records:
        return Html("")
    baselines = latest_baselines(view.watch)
    parts: list[object] = [el("h2", "Watched during training")]
    if emergence:
        parts.append(el("figure", el("img", src=emergence, alt="held-out accuracy per stage against images seen"),
                        el("figcaption", "best unit per stage, held-out accuracy on the watch set while training; "
                                         "bands: 95% Wilson interval on the watch set's size")))
    for concept in concepts_of(records):
        verdict = emergence_verdict(records, baselines, concept)
        parts += [el("h3", concept), el("p", verdict["text"]) if verdict else Html(""),
                  baselines_line(baselines, concept), points_table(records, concept, set_size(baselines, concept))]
    return el("section", *parts, class_="card", id="watch")
