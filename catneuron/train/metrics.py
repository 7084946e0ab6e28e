"""metrics.jsonl as a run writes it: the one place every trainer and its watch append a row."""

from __future__ import annotations

import json
from pathlib import Path

from catneuron.store import runs


class MetricsLog:
    """The run's metrics.jsonl, open for appending: a training step's row (`step`, rates, the objective's terms)
    or a `--watch` record (`record`: its kind). Each row is flushed as written, so a crash loses none."""

    def __init__(self, run: str | Path) -> None:
        self.file = open(Path(run) / runs.METRICS, "a")  # noqa: SIM115  closed by close() or the with block

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row, allow_nan=False) + "\n")  # NaN and Infinity are not JSON
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
