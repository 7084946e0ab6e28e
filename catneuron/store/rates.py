"""Training rates measured on this machine (by benchmarks/paper_step.py), so `catneuron info` can plan a run.

One JSON file per user: $CATNEURON_RATES if set, else $XDG_CACHE_HOME/catneuron/rates.json (~/.cache by
default), holding the last measurement of each preset.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from catneuron.store.files import write_json


@dataclass(frozen=True)
class Rate:
    """A preset's training rate: images per second over `steps` steps of `batch` images."""

    preset: str
    images_per_s: float
    batch: int
    steps: int
    threads: int
    processor: str
    precision: str
    date: str


def processor_name() -> str:
    """The processor's model name as `lscpu` prints it (benchmarks print it beside their numbers)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown processor"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown processor"


def rates_path() -> Path:
    """Where measured rates live: $CATNEURON_RATES, else the user's cache folder."""
    if os.environ.get("CATNEURON_RATES"):
        return Path(os.environ["CATNEURON_RATES"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "catneuron" / "rates.json"


def _read(path: Path) -> dict:
    """The file's presets, or none where it is missing or not what this module writes."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(rate: Rate, path: Path | None = None) -> Path:
    """Keep `rate` as its preset's last measurement (other presets' kept as they were); returns the file."""
    path = path or rates_path()
    write_json(path, _read(path) | {rate.preset: asdict(rate)})
    return path


def last(preset: str, path: Path | None = None) -> Rate | None:
    """The preset's last measured rate, or None where there is none (or the entry is unreadable)."""
    entry = _read(path or rates_path()).get(preset)
    try:
        rate = Rate(**entry)  # type: ignore[arg-type]  # not a mapping: the TypeError below
    except TypeError:
        return None
    return rate if isinstance(rate.images_per_s, (int, float)) and rate.images_per_s > 0 else None


def duration(images: float, rate: Rate) -> str:
    """How long `images` take at `rate`, in the largest unit that reads well (hours or days)."""
    hours = images / rate.images_per_s / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"
