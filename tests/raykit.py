"""Finding the Ray processes a test started, from /proc: what the Ray tests check is left behind."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

RAY_PROCESS = re.compile(rb"ray::|/ray/core/src/ray/|ray/dashboard/|ray/_private/(log_monitor|workers)|monitor\.py")


def ray_processes(marker: bytes) -> list[int]:
    """Live Ray processes whose command line or environment holds `marker` (workers rename themselves
    `ray::...` but inherit the environment of the Ray that started them), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if RAY_PROCESS.search(cmdline) and (marker in cmdline or marker in environ):
                found.append(int(entry.name))
    return found


def wait_gone(marker: bytes, seconds: float = 30) -> list[int]:
    """The processes of `ray_processes(marker)` still alive after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := ray_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def described(pids: list[int]) -> dict[int, str]:
    """What each of `pids` runs (its command line), for a message about processes left behind."""
    out = {}
    for pid in pids:
        try:
            out[pid] = (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except OSError:
            out[pid] = "(gone)"
    return out
