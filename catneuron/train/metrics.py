"""metrics.jsonl as a run writes it: the one place every trainer and its watch append a row."""

from __future__ import annotations

import json
from pathlib import Path

from catneuron.store import runs
from catneuron.train.events import Events


class MetricsLog:
    """The run's metrics.jsonl, open for appending: a training step's row (`step`, rates, the objective's terms)
    or a `--watch` record (`record`: its kind). Each row is flushed as written, so a crash loses none, and copied
    to `events` (TensorBoard, W&B) where given."""

    def __init__(self, run: str | Path, events: Events | None = None) -> None:
        self.file = open(Path(run) / runs.METRICS, "a")  # noqa: SIM115  closed by close() or the with block
        self.events = events

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row, allow_nan=False) + "\n")  # NaN and Infinity are not JSON
        self.file.flush()
        if self.events is not None:
            self.events.add(row)

    def close(self) -> None:
        self.file.close()
        if self.events is not None:
            self.events.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
