"""What produced a run: catneuron's version, the git commit when run from a clone, torch, the device, the exact
command line. RUN/provenance.json holds one entry per training session (a resumed or requeued run adds one)."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from catneuron.store import files
from catneuron.version import catneuron_version

PROVENANCE = "provenance.json"


def git_commit(where: Path = Path(__file__).resolve().parent) -> dict | None:
    """The commit of the clone catneuron is imported from, and whether its files differ from it; None when
    catneuron is not in a git clone (an installed wheel) or git is missing."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified": dirty}


def device_name(device: torch.device | str) -> str:
    """E.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu (x86_64)"."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine()})"


def session(device: torch.device | str, argv: list[str] | None = None) -> dict:
    argv = sys.argv if argv is None else argv
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "catneuron": catneuron_version(),
            "git": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
            "device": device_name(device), "host": platform.node(),
            "command": shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""}


def record_session(run: Path, device: torch.device | str, step: int) -> dict:
    """Append this session (started at `step`) to RUN/provenance.json; an unreadable file starts a new list."""
    path = Path(run) / PROVENANCE
    try:
        sessions = json.loads(path.read_text()).get("sessions", [])
        sessions = sessions if isinstance(sessions, list) else []
    except (OSError, ValueError, AttributeError):
        sessions = []
    entry = session(device) | {"from_step": step}
    files.write_json(path, {"sessions": [*sessions, entry]})
    return entry
