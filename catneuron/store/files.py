"""Files that readers never see half-written: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a file atomically (temporary file in the same folder, then rename): readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically."""
    write_atomic(path, json.dumps(data, indent=2))
