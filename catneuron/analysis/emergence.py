"""Reading a watched run's records: the held-out curve per stage, and the verdict at its best point and at its end.

`catneuron train --watch` appends two kinds of rows to metrics.jsonl (catneuron.train.watch writes them, with the scans
below):
`{"record": "watch_baselines", "concepts": {name: {random_guess, random_weights, linear_filter, bar, ...}}}`
once per watch set, and `{"record": "watch", "images": I, "concepts": {name: {"stages": [{stage, id, accuracy,
heldout_accuracy, auc}, ...], "upper_heldout": ...}}}` at the start, every interval and at the end.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable

import numpy as np

from catneuron.analysis.activations import UnitIndex
from catneuron.analysis.baselines import chance, filter_blocks, image_rows
from catneuron.analysis.concepts import concept_sets
from catneuron.analysis.evaluate import MARGIN, block_size, neuron_record, scan_linear
from catneuron.analysis.evaluate import scan_network as scan_units
from catneuron.analysis.null import random_network
from catneuron.analysis.selectivity import Layout
from catneuron.data.labelled import LabelledImages
from catneuron.data.sources import BatchSource
from catneuron.errors import UserError
from catneuron.model.network import Network

WATCH, BASELINES = "watch", "watch_baselines"
log = logging.getLogger(__name__)
MAX_IMAGES = 1000
# The watch's held-out accuracy is a proportion over the watch set's n images; its standard error,
# sqrt(p (1 - p) / n), is largest at p = 0.5. SE_BOUND is the largest the watch accepts without saying so:
# 2.5 points needs 400 images, the fewest a time budget may cut a watch set to.
SE_BOUND = 0.025
MIN_IMAGES = math.ceil(0.25 / SE_BOUND**2)
Z95 = 1.959963984540054


def standard_error(n: int, p: float = 0.5) -> float:
    """Standard error of an accuracy measured on n images (the worst case, p = 0.5, by default)."""
    return math.sqrt(p * (1 - p) / n)


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of an accuracy `p` measured on `n` images: unlike p ± z SE it
    stays inside [0, 1] and is not zero-width at 0 or 1."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def set_size(baselines: dict | None, concept: str) -> int | None:
    """The number of images the watch scanned for `concept`, from its baselines record."""
    base = (baselines or {}).get("concepts", {}).get(concept)
    n = (base.get("n_positive"), base.get("n_negative")) if isinstance(base, dict) else (None, None)
    counts = [v for v in n if isinstance(v, int) and not isinstance(v, bool)]
    return sum(counts) if len(counts) == 2 else None


def upper_heldout(stages: list[dict]) -> float:
    """The best held-out accuracy of a stage-2-or-higher unit (stage 1's when the network has one stage)."""
    upper = [s["heldout_accuracy"] for s in stages if s["stage"] >= 2] or [stages[0]["heldout_accuracy"]]
    return max(upper)


def watch_records(rows: list[dict], say: Callable[[str], None] | None = None) -> list[dict]:
    """The well-formed watch records in image order, the last written kept where a crash and a resume repeat a
    count. A malformed one (a hand edit, another version) is skipped, and counted to `say` when given."""
    watch = [r for r in rows if r.get("record") == WATCH]
    by_images = {r["images"]: r for r in watch if well_formed(r)}
    skipped = sum(not well_formed(r) for r in watch)
    if skipped and say is not None:
        say(f"catneuron: metrics.jsonl: skipped {skipped} malformed watch record(s)")
    return [by_images[i] for i in sorted(by_images)]


def well_formed(record: dict) -> bool:
    """Whether a watch record has every field the readers use, of the right type."""
    concepts = record.get("concepts")
    return (_integer(record.get("images")) and isinstance(concepts, dict) and bool(concepts)
            and all(isinstance(c, dict) and _fraction(c.get("upper_heldout")) and isinstance(c.get("stages"), list)
                    and all(isinstance(s, dict) and _integer(s.get("stage")) and _fraction(s.get("heldout_accuracy"))
                            for s in c["stages"])
                    for c in concepts.values()))


def latest_baselines(rows: list[dict]) -> dict | None:
    """The last well-formed baselines record (every concept's bar a number)."""
    found = [r for r in rows if r.get("record") == BASELINES and isinstance(r.get("concepts"), dict)
             and all(isinstance(c, dict) and _fraction(c.get("bar")) for c in r["concepts"].values())]
    return found[-1] if found else None


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: object) -> bool:
    """A finite number (an accuracy; the bar may pass 1 by the margin)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    trained = [r for r in held if r["images"] > 0] or held  # the untrained network is no training's best point
    best = max(trained, key=lambda r: r["concepts"][concept]["upper_heldout"])  # the first of equals
    points = {"best": best, "end": held[-1]}
    out: dict = {"concept": concept, "bar": base["bar"] if base else None}
    sentences = []
    n = set_size(baselines, concept)
    for name, record in points.items():
        value = record["concepts"][concept]["upper_heldout"]
        out[name] = {"images": record["images"], "upper_heldout": value,
                     "above_bar": None if base is None else value >= base["bar"]}
        if name == "end" and record is best:
            continue
        where = "at its best point" if name == "best" else "at the end"
        where += ", the end," if name == "best" and record is held[-1] else ""
        text = f"{where} ({record['images']:,} images) the best stage-2/3 unit reaches {100 * value:.1f}% held-out"
        if n:
            low, high = wilson(value, n)
            text += f" (95% interval {100 * low:.1f}-{100 * high:.1f}% on {n:,} images)"
        if base is not None:
            text += (f", {100 * (value - base['bar'] + MARGIN):+.1f} points against the better baseline "
                     f"({'above' if value >= base['bar'] else 'below'} the bar of {100 * base['bar']:.1f}%)")
        sentences.append(text)
    start = held[0]
    if start["images"] == 0 and start is not best and start["concepts"][concept]["upper_heldout"] > \
            best["concepts"][concept]["upper_heldout"]:
        sentences.append(f"the untrained network (0 images) scored higher, "
                         f"{100 * start['concepts'][concept]['upper_heldout']:.1f}%: the differences are within "
                         "the watch set's noise or training has not helped yet")
    out["text"] = f"Watched during training ({concept}): " + "; ".join(sentences) + "."
    return out


def subsample(test: LabelledImages, limit: int, seed: int = 0) -> LabelledImages:
    """At most `limit` images, drawn per class in proportion (the positive fraction kept), in their order."""
    if len(test.labels) <= limit:
        return test
    rng = np.random.default_rng([seed, 23])
    keep = []
    for cls in (0, 1):
        members = np.flatnonzero(test.labels == cls)
        share = max(2, round(len(members) * limit / len(test.labels)))  # 2: one per held-out half
        keep.append(rng.choice(members, min(share, len(members)), replace=False))
    index = np.sort(np.concatenate(keep))
    return LabelledImages(test.images[index], test.labels[index])


def watch_sets(concepts: list[tuple[str, str]], negatives: str, size: int, channels: int, limit: int = MAX_IMAGES,
               say: Callable[[str], None] = log.info) -> list[tuple[str, LabelledImages]]:
    """The labelled watch sets (evaluate's: the first concept sets the ratio), each cut to `limit` images."""
    try:
        sets = concept_sets(concepts, negatives, size, channels, say=say)
    except UserError as e:
        raise UserError(f"--watch: {e}") from None
    cut = [(name, subsample(test, limit)) for name, test in sets]
    for (name, full), (_, kept) in zip(sets, cut, strict=True):
        if len(kept.labels) < len(full.labels):
            say(f"watch: {name}: scanning {len(kept.labels):,} of {len(full.labels):,} images (the same "
                "fraction of each class; --watch-images)")
        if len(kept.labels) < MIN_IMAGES:
            say(f"watch: {name}: {len(kept.labels):,} images give the held-out accuracy a standard error of up to "
                f"{100 * standard_error(len(kept.labels)):.1f} points, over the {100 * SE_BOUND:g}-point bound "
                f"({MIN_IMAGES} images): differences that small between points of the curve are noise")
    return cut


def fingerprint(sets: list[tuple[str, LabelledImages]]) -> str:
    """Names, labels and pixels of the watch set: a resumed run reuses its baselines only for the same set."""
    digest = hashlib.sha256()
    for name, test in sets:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(test.labels).tobytes())
        digest.update(np.ascontiguousarray(test.images, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def scan_network(network: Network, sets: list[tuple[str, LabelledImages]], seed: int = 0) -> dict:
    """Per concept: every stage's best unit (chosen on all images), its accuracy, AUC and held-out accuracy."""
    index = UnitIndex(network)
    concepts = {}
    for name, test in sets:
        labels = test.labels.astype(np.int64)
        scored = scan_units(network, test.images, Layout(labels, seed), name, progress=False)
        stages = []
        for stage in range(1, len(network.stages) + 1):
            units = index.units_of_stage(stage)
            stages.append(neuron_record(index, scored, scored.full.best(units),
                                        heldout_accuracy=scored.heldout(units)[0]))
        concepts[name] = {"stages": stages, "upper_heldout": upper_heldout(stages)}
    return concepts


def baselines(network: Network, sets: list[tuple[str, LabelledImages]], source: BatchSource, n_filters: int,
              seed: int = 0) -> dict:
    """Per concept: random guess, and held-out accuracy of the random-weights network and the best linear filter;
    the bar is the better of the last two plus evaluate's margin."""
    random = random_network(network.config, seed + 1, next(network.parameters()).device)
    block = block_size(max(len(test.labels) for _, test in sets))
    filters = list(filter_blocks(source.batches(500, seed=12345), n_filters, block))  # reused for every concept
    out = {}
    for name, test in sets:
        labels = test.labels.astype(np.int64)
        layout = Layout(labels, seed)
        rand = scan_units(random, test.images, layout, name, progress=False).heldout()[0]
        leader, used = scan_linear(filters, image_rows(test.images), layout, n_filters, name, progress=False)
        linear = leader.record("training image")["heldout_accuracy"]
        out[name] = {"random_guess": chance(labels, name)["accuracy"], "random_weights": rand, "linear_filter": linear,
                     "bar": max(rand, linear) + MARGIN, "n_positive": int(labels.sum()),
                     "n_negative": int((labels == 0).sum()), "n_filters": used}
    return out
