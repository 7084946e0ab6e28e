"""Files that readers never see half-written: a temporary file in the same folder, then a rename.

One mode policy for everything catneuron writes (checkpoints, shards, JSON, figures): the mode the
user's umask gives any new file (0644 under the usual 022), so a run folder is as private as its owner
makes new files. A write that fails (disk full) removes its temporary file and raises OSError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_mode() -> int:
    """The mode of every file catneuron writes: 0666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temporary_path(path: Path) -> Path:
    """Where `atomic` writes `path` before the rename: a hidden name that carries the writer's process id."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files (`temporary_path`) in `folder` whose writer is gone (killed mid-write, say:
    a `paper` checkpoint's is 7.5 GB); those of a live process stay. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it is synced, given file_mode() and renamed
    over `path`; on any failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a file atomically (temporary file in the same folder, then rename): readers never see half of it."""
    with atomic(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def write_json(path: str | Path, data: dict) -> None:
    """Write JSON atomically."""
    write_atomic(path, json.dumps(data, indent=2))
