"""Reading a watched run's records: the held-out curve per stage, and the verdict at its best point and at its end.

`catneuron train --watch` appends two kinds of rows to metrics.jsonl (catneuron.train.watch writes them):
`{"record": "watch_baselines", "concepts": {name: {random_guess, random_weights, linear_filter, bar, ...}}}`
once per watch set, and `{"record": "watch", "images": I, "concepts": {name: {"stages": [{stage, id, accuracy,
heldout_accuracy, auc}, ...], "upper_heldout": ...}}}` at the start, every interval and at the end.
"""

from __future__ import annotations

from catneuron.analysis.evaluate import MARGIN

WATCH, BASELINES = "watch", "watch_baselines"


def upper_heldout(stages: list[dict]) -> float:
    """The best held-out accuracy of a stage-2-or-higher unit (stage 1's when the network has one stage)."""
    upper = [s["heldout_accuracy"] for s in stages if s["stage"] >= 2] or [stages[0]["heldout_accuracy"]]
    return max(upper)


def watch_records(rows: list[dict]) -> list[dict]:
    """The watch records in image order, the last written kept where a crash and a resume repeat a count."""
    by_images = {r["images"]: r for r in rows if r.get("record") == WATCH and isinstance(r.get("images"), int)}
    return [by_images[i] for i in sorted(by_images)]


def latest_baselines(rows: list[dict]) -> dict | None:
    found = [r for r in rows if r.get("record") == BASELINES and isinstance(r.get("concepts"), dict)]
    return found[-1] if found else None


def curve(records: list[dict], concept: str) -> dict[int, tuple[list[int], list[float]]]:
    """Per stage: (images seen, held-out accuracy of the stage's best unit), from the records that hold `concept`."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    for record in records:
        for stage in record.get("concepts", {}).get(concept, {}).get("stages", []):
            xs, ys = out.setdefault(stage["stage"], ([], []))
            xs.append(record["images"])
            ys.append(stage["heldout_accuracy"])
    return out


def concepts_of(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(name for r in records for name in r.get("concepts", {})))


def emergence_verdict(records: list[dict], baselines: dict | None, concept: str) -> dict | None:
    """The verdict at the best point of the curve (highest upper-stage held-out accuracy) and at its end."""
    held = [r for r in records if concept in r.get("concepts", {})]
    if not held:
        return None
    base = (baselines or {}).get("concepts", {}).get(concept)
    best = max(held, key=lambda r: r["concepts"][concept]["upper_heldout"])  # the first of equals
    points = {"best": best, "end": held[-1]}
    out: dict = {"concept": concept, "bar": base["bar"] if base else None}
    sentences = []
    for name, record in points.items():
        value = record["concepts"][concept]["upper_heldout"]
        out[name] = {"images": record["images"], "upper_heldout": value,
                     "above_bar": None if base is None else value >= base["bar"]}
        if name == "end" and record is best:
            continue
        where = "at its best point" if name == "best" else "at the end"
        where += ", the end," if name == "best" and record is held[-1] else ""
        text = f"{where} ({record['images']:,} images) the best stage-2/3 unit reaches {100 * value:.1f}% held-out"
        if base is not None:
            text += (f", {100 * (value - base['bar'] + MARGIN):+.1f} points against the better baseline "
                     f"({'above' if value >= base['bar'] else 'below'} the bar of {100 * base['bar']:.1f}%)")
        sentences.append(text)
    out["text"] = f"Watched during training ({concept}): " + "; ".join(sentences) + "."
    return out
