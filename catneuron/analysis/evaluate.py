"""`evaluate`: the selectivity scan of a network for one concept, with the paper's baselines (Table 1).

Sized for the paper's job (37,000 test images, 100,000 linear filters) on a small machine: the network's
units are scanned in two streamed passes over the test set (selectivity.py), and the linear filters in
blocks whose responses fit SCAN_BYTES, keeping only the best filter so far; a progress line per phase.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from io import BufferedRandom

import numpy as np
import torch

from catneuron.analysis.activations import UnitIndex, unit_activations
from catneuron.analysis.baselines import chance, filter_blocks, image_rows
from catneuron.analysis.selectivity import GRID, N_THRESHOLDS, Batches, Layout, Scored, scan
from catneuron.data.labelled import LabelledImages
from catneuron.model.network import Network
from catneuron.progress import Progress

SCAN_BYTES = 512 << 20  # linear-filter responses and counts held at once
CHUNK = 1024  # images per streamed batch of linear-filter responses
# A unit's histograms in a scan (int64 counts).
BYTES_PER_UNIT = 8 * (6 * (GRID + 1) + 4 * (N_THRESHOLDS + 1))


def block_size(n_images: int, budget: int = SCAN_BYTES) -> int:
    """Linear filters per block: their responses to every test image, and their counts, within `budget`."""
    return max(1, budget // (4 * n_images + BYTES_PER_UNIT))


def watched(batches: Batches, n_images: int, label: str, enabled: bool) -> Batches:
    """`batches` with a progress line per pass (images done, rate, time left)."""
    passes = iter(["pass 1/2 (activations, ranges)", "pass 2/2 (counts)"])

    def run() -> Iterator[tuple[torch.Tensor | np.ndarray, int]]:
        progress = Progress(n_images, f"{label}, {next(passes, 'pass')}: images", enabled)
        start, done = time.monotonic(), 0
        for acts, group in batches():
            yield acts, group
            done += len(acts)
            progress.update(done, done / max(time.monotonic() - start, 1e-9), "images", final=done == n_images)

    return run


def network_batches(network: Network, images: np.ndarray, layout: Layout, batch_size: int = 512) -> Batches:
    """Every unit's activations, a batch of one (half, label) group at a time."""
    def run() -> Iterator[tuple[torch.Tensor, int]]:
        for group, index in layout.spans(batch_size):
            for acts in unit_activations(network, images[index], len(index)):
                yield acts, group

    return run


class Spill:
    """Batches computed once: the first pass writes them to an unnamed temporary file as it hands them on, the
    second reads them back. The network runs once per scan, memory stays one batch, the file holds
    images x units x 4 bytes."""

    def __init__(self, batches: Batches, file: BufferedRandom) -> None:
        self.batches, self.file = batches, file
        self.written: list[tuple[tuple[int, ...], int]] | None = None

    def __call__(self) -> Iterator[tuple[np.ndarray, int]]:
        return self._write() if self.written is None else self._read()

    def _write(self) -> Iterator[tuple[np.ndarray, int]]:
        written: list[tuple[tuple[int, ...], int]] = []
        for batch, group in self.batches():
            acts = np.ascontiguousarray(batch, dtype=np.float32)
            self.file.write(memoryview(acts).cast("B"))  # type: ignore[arg-type]  # numpy's stubs: a buffer from 3.12
            written.append((acts.shape, group))
            yield acts, group
        self.written = written

    def _read(self) -> Iterator[tuple[np.ndarray, int]]:
        self.file.seek(0)
        for shape, group in self.written or []:
            acts = np.empty(shape, dtype=np.float32)
            self.file.readinto(memoryview(acts).cast("B"))  # type: ignore[arg-type]
            yield acts, group


def scan_network(network: Network, images: np.ndarray, layout: Layout, label: str, progress: bool) -> Scored:
    with tempfile.TemporaryFile() as file:  # unnamed: gone when closed, even if the process is killed
        spill = Spill(network_batches(network, images, layout), file)
        return scan(watched(spill, len(layout.order), label, progress), layout.counts())


@dataclass
class Leader:
    """The best unit of a population scanned block by block: all that its Table 1 row needs, so memory does
    not grow with the population. Ties keep the earlier unit, as Scan.best does."""

    full: tuple[float, float, int, float] = (-1.0, -1.0, -1, 0.0)  # accuracy, AUC, unit, threshold
    halves: list[tuple[float, float, int, float]] = field(  # per picking half: accuracy, AUC, unit, transfer
        default_factory=lambda: [(-1.0, -1.0, -1, 0.0)] * 2)

    def update(self, scored: Scored, offset: int) -> None:
        u = scored.full.best()
        s = scored.full
        if (s.accuracy[u], s.auc[u]) > self.full[:2]:
            self.full = (float(s.accuracy[u]), float(s.auc[u]), offset + u, float(s.threshold[u]))
        for h, half in enumerate(scored.halves):
            u = half.best()
            if (half.accuracy[u], half.auc[u]) > self.halves[h][:2]:
                self.halves[h] = (float(half.accuracy[u]), float(half.auc[u]), offset + u, half.transferred(u))

    def record(self, name: str, **extra) -> dict:
        accuracy, auc, unit, threshold = self.full
        return {"id": f"{name} {unit}", "accuracy": accuracy, "threshold": threshold, "auc": auc,
                "heldout_accuracy": float(np.mean([h[3] for h in self.halves]))} | extra


def scan_linear(blocks: Iterable[torch.Tensor], rows: torch.Tensor, layout: Layout, total: int, label: str,
                progress: bool) -> tuple[Leader, int]:
    """Linear detectors (unit rows, in blocks) against `rows` of the test images: the best, and how many."""
    leader, done, start = Leader(), 0, time.monotonic()
    meter = Progress(total, f"{label}: filters", progress)
    for block in blocks:
        responses = [(rows[index] @ block.T, group) for group, index in layout.spans(CHUNK)]
        leader.update(scan(partial(iter, responses), layout.counts()), done)
        done += len(block)
        meter.update(done, done / max(time.monotonic() - start, 1e-9), "filters", final=done >= total)
    return leader, done


def record(scored: Scored, unit: int, name: str, **extra) -> dict:
    s = scored.full
    return {"id": name, "accuracy": float(s.accuracy[unit]), "threshold": float(s.threshold[unit]),
            "auc": float(s.auc[unit])} | extra


def neuron_record(index: UnitIndex, scored: Scored, unit: int, **extra) -> dict:
    nid = index.neuron(unit)
    return record(scored, unit, str(nid), stage=nid.stage, sublayer=nid.sublayer, **extra)


MARGIN = 0.03


def verdict(by_stage: list[dict], baselines: dict[str, dict]) -> dict:
    """Does a high-level (stage >= 2) neuron beat the random-weights network and the best linear filter by
    MARGIN of held-out accuracy? The paper's claim, measured; the text says what this run shows either way."""
    bar = max(baselines["random_weights"]["heldout_accuracy"], baselines["linear_filter"]["heldout_accuracy"])
    upper = max(by_stage[1:], key=lambda r: r["heldout_accuracy"]) if len(by_stage) > 1 else by_stage[0]
    margin = upper["heldout_accuracy"] - bar
    emerged = upper["stage"] > 1 and margin >= MARGIN
    text = (f"best stage-{upper['stage']} neuron {upper['id']}: {upper['heldout_accuracy']:.1%} held-out, against "
            f"{bar:.1%} for the better of random weights and the best linear filter ({100 * margin:+.1f} points). ")
    text += ("A high-level neuron beats both baselines by 3 points or more." if emerged else
             "No high-level neuron beats the baselines by 3 points: this run does not show the paper's "
             "emergence (docs/experiments.md has the CPU-scale study).")
    return {"emerged": emerged, "upper_neuron": upper["id"], "upper_heldout_accuracy": upper["heldout_accuracy"],
            "baseline_heldout_accuracy": bar, "margin": margin, "text": text}


SUBLAYER_CODES = ("filter", "pool", "norm")


def unit_scores(index: UnitIndex, scored: Scored) -> dict[str, np.ndarray]:
    """Every unit's scores as columns: accuracy, AUC and threshold on the whole test set, held-out accuracy
    (threshold chosen on one half, scored on the other, both directions averaged), and where the unit is
    (stage, sublayer as an index into SUBLAYER_CODES, map, y, x): the distribution per stage, not the top 20."""
    where = np.array([(n.stage, SUBLAYER_CODES.index(n.sublayer), n.map, n.y, n.x)
                      for n in map(index.neuron, range(len(index)))], dtype=np.int32).reshape(-1, 5)
    s = scored.full
    return {"accuracy": s.accuracy.astype(np.float32), "auc": s.auc.astype(np.float32),
            "threshold": s.threshold.astype(np.float32),
            "heldout_accuracy": np.mean([h.transfer for h in scored.halves if h.transfer is not None],
                                        axis=0).astype(np.float32),
            "stage": where[:, 0], "sublayer": where[:, 1], "map": where[:, 2], "y": where[:, 3], "x": where[:, 4]}


def evaluate(network: Network, test: LabelledImages, concept: str, training_batches: Iterable[torch.Tensor],
             n_filters: int = 100_000, seed: int = 0, top: int = 20, progress: bool = True,
             scores: dict | None = None) -> dict:
    """The whole Table 1 row for one concept, as the JSON `catneuron evaluate --json` writes. `scores`, when
    given, receives every unit's scores (`unit_scores`)."""
    labels = test.labels.astype(np.int64)
    layout = Layout(labels, seed)
    index = UnitIndex(network)
    trained = scan_network(network, test.images, layout, f"{concept}: trained network", progress)
    best = trained.full.best()
    if scores is not None:
        scores.update(unit_scores(index, trained))
    by_stage = []
    for stage in range(1, len(network.stages) + 1):
        units = index.units_of_stage(stage)
        by_stage.append(neuron_record(index, trained, trained.full.best(units),
                                      heldout_accuracy=trained.heldout(units)[0]))

    torch.manual_seed(seed + 1)
    with next(network.parameters()).device:  # built where it runs: no copy through host memory
        random_net = Network(network.config).eval()
    rand = scan_network(random_net, test.images, layout, f"{concept}: random-weights network", progress)

    blocks = filter_blocks(training_batches, n_filters, block_size(len(labels)))
    linear, n_used = scan_linear(blocks, image_rows(test.images), layout, n_filters, f"{concept}: linear", progress)

    order = np.lexsort((-trained.full.auc, -trained.full.accuracy))[:top]
    rows = {
        "chance": chance(labels, concept),
        "random_weights": neuron_record(UnitIndex(random_net), rand, rand.full.best()) | {
            "heldout_accuracy": rand.heldout()[0]},
        "linear_filter": linear.record("training image", n_filters=n_used),
        "best_first_stage": by_stage[0],
    }
    return {
        "concept": concept,
        "n_positive": int((labels == 1).sum()),
        "n_negative": int((labels == 0).sum()),
        "positive_fraction": float((labels == 1).mean()),
        "best_neuron": neuron_record(index, trained, best),
        "best_by_stage": by_stage,
        "heldout_accuracy": trained.heldout()[0],
        "heldout": {"units": [str(index.neuron(u)) for u in trained.heldout()[1]],
                    "protocol": "unit and threshold chosen on one stratified half, scored on the other; "
                                "mean of both directions"},
        "baselines": {"random_guess": rows["chance"]["accuracy"]} | {
            k: v["accuracy"] for k, v in rows.items() if k != "chance"},
        "baselines_detail": rows,
        "top_neurons": [neuron_record(index, trained, int(u)) for u in order],
        "verdict": verdict(by_stage, rows),
    }
