"""Watching a run: is a concept neuron emerging? Scanned at the start, every interval and at the end of training.

Every neuron is scanned on a fixed labelled watch set with `evaluate`'s code and held-out protocol; each scan
is a `watch` record in metrics.jsonl (catneuron.analysis.emergence reads them), the baselines (random guess,
the random-weights network, the best linear filter) one `watch_baselines` record at the start. The weights of
the record with the best stage-2/3 held-out accuracy (the first concept's) are kept in checkpoint-best, trained
records only (the untrained network at 0 images is no training's best point). By
default the watch takes at most 10% of the run's wall time, its baselines included: it widens the interval when a
scan costs more, and a scan waits while the watch's time so far is over its share.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catneuron.analysis.emergence import (
    BASELINES,
    MIN_IMAGES,
    SE_BOUND,
    WATCH,
    baselines,
    fingerprint,
    latest_baselines,
    scan_network,
    subsample,
    watch_records,
)
from catneuron.data.labelled import LabelledImages
from catneuron.data.sources import BatchSource
from catneuron.errors import UserError
from catneuron.model.config import Config
from catneuron.model.network import Network
from catneuron.store import checkpoint, runs
from catneuron.train.metrics import MetricsLog

log = logging.getLogger(__name__)


def best_checkpoint_path(run: str | Path) -> Path:
    return Path(run) / runs.BEST_CHECKPOINT


@dataclass
class WatchOptions:
    """`--watch-every` N images or `--watch-minutes` M (neither: as often as the budget allows); the budget is the
    largest share of the run's wall time the scans may take (1: never widen)."""

    every_images: int | None = None
    every_seconds: float | None = None
    budget: float = 0.1
    n_filters: int = 10_000
    seed: int = 0

    def validate(self) -> WatchOptions:
        if self.every_images is not None and self.every_seconds is not None:
            raise UserError("--watch-every and --watch-minutes: give one of them")
        if self.every_images is not None and self.every_images < 1:
            raise UserError(f"--watch-every {self.every_images}: must be at least 1 image")
        if self.every_seconds is not None and not (math.isfinite(self.every_seconds) and self.every_seconds > 0):
            raise UserError(f"--watch-minutes {self.every_seconds / 60:g}: must be a positive number")
        if not 0 < self.budget <= 1:
            raise UserError(f"--watch-budget {self.budget:g}: a share of the run's time in (0, 1]")
        if self.budget == 1 and self.every_images is None and self.every_seconds is None:
            raise UserError("--watch-budget 1: give --watch-every or --watch-minutes (no budget to set the interval)")
        return self


class Watch:
    """The watch of one run: when to scan, the records, the best checkpoint, and the progress line's fields."""

    def __init__(self, sets: list[tuple[str, LabelledImages]], options: WatchOptions | None = None,
                 say: Callable[[str], None] = log.info) -> None:
        if not sets:
            raise UserError("--watch: no concept to watch")
        self.sets, self.options, self.say = sets, (options or WatchOptions()).validate(), say
        self.every_images, self.every_seconds = self.options.every_images, self.options.every_seconds
        self.concept = sets[0][0]
        self.base: dict = {}
        self.latest: dict | None = None
        self.best = -math.inf
        self.last_images = -1
        self.scan_seconds: list[float] = []
        self.spent = 0.0  # seconds of watch work this session: the set's sizing, the baselines, the scans
        self.widened = False

    # -- the session: history, baselines, the clock --------------------------------------------------------------

    def start(self, run: Path, config: Config, data_spec: str, source: BatchSource, metrics: MetricsLog | None,
              network: Network, images: int, max_seconds: float | None = None) -> None:
        """Pick up the curve where metrics.jsonl left it (resume), log the baselines if this watch set has none,
        and scan unless the curve already has this point. With a time limit the watch set is cut to fit it.
        `metrics`: the run's, which only the process that writes the run folder has (and only it watches)."""
        assert metrics is not None, "the watch runs in the process that writes metrics.jsonl"
        self.run, self.config, self.data_spec, self.metrics = Path(run), config, data_spec, metrics
        self.opened = time.monotonic()
        rows = runs.read_rows(run)
        known = latest_baselines(rows)
        self._fit_sets(network, known, max_seconds)
        stamp = fingerprint(self.sets)
        if known is not None and known.get("fingerprint") not in (None, stamp):
            raise UserError("--watch: this run was watched on another watch set (the images, names or "
                            "--watch-images differ), and its best score and checkpoint-best compare within one "
                            "set; resume with the same --watch, --watch-negatives and --watch-images, or start "
                            "a new run")
        history = [r for r in watch_records(rows, self.say) if r["images"] <= images]
        if history:
            self.last_images = history[-1]["images"]
            self.latest = history[-1]
            self.best = max((r["concepts"][self.concept]["upper_heldout"] for r in history
                             if self.concept in r["concepts"] and r["images"] > 0), default=-math.inf)
        if known is not None and known.get("fingerprint") == stamp:
            self.base = known["concepts"]
        else:
            started = time.monotonic()
            self.base = baselines(network, self.sets, source, self.options.n_filters, self.options.seed)
            seconds = time.monotonic() - started
            self.spent += seconds
            self._write({"record": BASELINES, "images": images, "fingerprint": stamp, "seconds": seconds,
                         "concepts": self.base})
        if self.every_images is None and self.every_seconds is None:
            self.every_seconds = 0.0  # set from the first scan's cost, in _keep_to_budget
        self.trained_from, self.scanned_at = images, time.monotonic()
        self.ensure(network, images, images // config.train.batch_size)

    def due(self, images: int) -> bool:
        """A scan is due when the interval has passed and the watch, with that scan, stays within its budget."""
        if images <= self.last_images:
            return False
        if self.every_images is not None:
            interval = images // self.every_images > self.last_images // self.every_images
        else:
            interval = time.monotonic() - self.scanned_at >= (self.every_seconds or 0.0)  # set by start()
        return interval and self._within_budget()

    def _fit_sets(self, network: Network, known: dict | None, max_seconds: float | None) -> None:
        """Cut the watch sets so that the fixed scans (two baselines, the start, the end) take at most half the
        budget of a run limited to `max_seconds`; a resumed run keeps the sizes its baselines were computed on."""
        sizes = {name: base["n_positive"] + base["n_negative"] for name, base in (known or {}).get("concepts",
                                                                                              {}).items()}
        if not sizes and max_seconds is not None and self.options.budget < 1:
            probe = subsample(self.sets[0][1], 100)
            started = time.monotonic()
            scan_network(network, [("probe", probe)], self.options.seed)
            seconds = time.monotonic() - started
            self.spent += seconds
            per_image = seconds / len(probe.labels)
            total = sum(len(test.labels) for _, test in self.sets)
            allowed = int(self.options.budget * max_seconds / 2 / (4 * per_image))
            wanted = {name: len(test.labels) * allowed // total for name, test in self.sets}
            sizes = {name: max(min(MIN_IMAGES, len(test.labels)), wanted[name]) for name, test in self.sets}
            if any(sizes[name] < len(test.labels) for name, test in self.sets):
                floor = any(wanted[name] < sizes[name] for name in sizes)
                keep = (f"; no fewer than {MIN_IMAGES} images, for a standard error under {100 * SE_BOUND:g} "
                        "points, even where that takes more than the budget" if floor else "")
                self.say(f"watch: a scan takes {1000 * per_image:.0f} ms per image here: scanning "
                         f"{', '.join(f'{n:,} {name}' for name, n in sizes.items())} images, to keep the watch "
                         f"under {100 * self.options.budget:g}% of the run's time (--watch-budget){keep}")
                self.widened = True  # said once
        self.sets = [(name, subsample(test, sizes.get(name, len(test.labels)))) for name, test in self.sets]

    # -- one scan ------------------------------------------------------------------------------------------------

    def scan(self, network: Network, images: int, step: int) -> dict:
        """The record of `network` after `images` images (a pure function of the weights; may run in a thread)."""
        started = time.monotonic()
        concepts = scan_network(network, self.sets, self.options.seed)
        return {"record": WATCH, "images": images, "step": step, "scan_s": time.monotonic() - started,
                "concepts": concepts}

    def record(self, record: dict, network: Network) -> None:
        """Log a scan's record and keep the best checkpoint; widen the interval if the scans are over budget."""
        record |= {"every_images": self.every_images, "every_seconds": self.every_seconds}
        for name, row in record["concepts"].items():
            row["bar"] = self.base[name]["bar"]
        self._write(record)
        self.last_images, self.latest, self.scanned_at = record["images"], record, time.monotonic()
        self.scan_seconds.append(record["scan_s"])
        self.spent += record["scan_s"]
        value = record["concepts"][self.concept]["upper_heldout"]
        if record["images"] > 0 and value > self.best:
            self.best = value
            checkpoint.save(best_checkpoint_path(self.run), self.config, record["step"], network,
                            extra={"data": self.data_spec, "watch": record})
        self._keep_to_budget(record["images"])

    def observe(self, network: Network, images: int, step: int) -> None:
        """Scan now and record it (the single-process trainer's call)."""
        self.record(self.scan(network, images, step), network)

    def ensure(self, network: Network, images: int, step: int) -> None:
        """A scan at this point unless the curve has one (the start, the end, a resumed run's start)."""
        if images > self.last_images:
            self.observe(network, images, step)

    def fields(self, images: int | None = None) -> dict[str, str]:
        """For the progress line, e.g. "faces s2/3 61.2% (bar 64.0%)": the best stage-2/3 held-out accuracy of
        the first concept against its bar, in percent; "@1,200" once training (`images`) has gone past the
        scan, which was at 1,200 images."""
        if self.latest is None or self.concept not in self.latest["concepts"]:
            return {}
        value = self.latest["concepts"][self.concept]["upper_heldout"]
        text = f"{100 * value:.1f}% (bar {100 * self.base[self.concept]['bar']:.1f}%)"
        if images is not None and images > self.latest["images"]:
            text += f" @{self.latest['images']:,}"
        return {f"{self.concept} s2/3": text}

    # -- the budget ----------------------------------------------------------------------------------------------

    def _keep_to_budget(self, images: int) -> None:
        """Widen the interval so that scans take at most `budget` of the wall time; say so the first time."""
        budget = self.options.budget
        if budget >= 1:
            return
        cost = float(np.mean(self.scan_seconds))
        spare = cost * (1 - budget) / budget  # seconds of training per scan that keep the share at `budget`
        if self.every_images is None:
            if (self.every_seconds or 0.0) < spare:
                first = self.every_seconds == 0
                self.every_seconds = spare
                self._tell(f"a scan takes {cost:.1f} s: scanning every {spare:.0f} s of training", quiet=first)
            return
        training = time.monotonic() - self.opened - self.spent
        if images <= self.trained_from or training <= 0:
            return  # no training rate measured yet
        rate = (images - self.trained_from) / training
        needed = spare * rate
        if self.every_images < needed:
            digits = 10 ** max(0, int(math.log10(needed)) - 1)
            self.every_images = int(math.ceil(needed / digits) * digits)
            self._tell(f"a scan takes {cost:.1f} s, {needed / rate:.0f} s of training at {rate:.0f} images/s: "
                       f"scanning every {self.every_images:,} images")

    def _within_budget(self) -> bool:
        """Whether one more scan keeps the watch's time this session (sizing, baselines and scans) within `budget`
        of the wall time since it started; the first time it does not, say that the scans wait."""
        budget = self.options.budget
        if budget >= 1 or not self.scan_seconds:
            return True
        cost = float(np.mean(self.scan_seconds))
        if self.spent + cost <= budget * (time.monotonic() - self.opened + cost):
            return True
        self._tell(f"the baselines and scans so far took {self.spent:.1f} s: the next scan waits")
        return False

    def _tell(self, what: str, quiet: bool = False) -> None:
        if not self.widened:
            self.widened = True
            note = "" if quiet else " (wider than asked)"
            self.say(f"watch: {what}{note}, to keep the watch under {100 * self.options.budget:g}% of the run's time "
                     "(--watch-budget)")

    def _write(self, row: dict) -> None:
        self.metrics.write(row)
