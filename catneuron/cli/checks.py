"""Checks every command runs before its work starts: where it will write, and the numbers it was given.

A command that finds a read-only folder only when it writes its results has already spent its scan or
its training; these checks make that a one-line error at the start instead.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from catneuron.errors import UserError
from catneuron.model.config import Config, to_dict


def writable_folder(path: str | Path, flag: str) -> Path:
    """`path` as a folder this process can create files in (made if missing, its name valid UTF-8), or a UserError
    naming `flag`.
    The probe file's name is new (O_EXCL): on a shared filesystem the processes of other nodes, whose ids may
    equal this one's, probe the same folder at the same time (`torchrun` ranks)."""
    path = Path(path)
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        # A byte that is not UTF-8 cannot go into config.json, the results or the resume command the run prints.
        raise UserError(f"{flag} {str(path)!r}: the name is not valid UTF-8; choose another") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".catneuron-probe-"):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return path


@contextmanager
def removed_if_refused(path: str | Path) -> Iterator[None]:
    """Folders of `path` that do not exist yet and that the command makes (writable_folder) are removed again,
    while still empty, when a check after it refuses the command: a failed --data check leaves no empty --out."""
    path = Path(path).absolute()
    missing = [p for p in [path, *path.parents] if not p.exists()]
    try:
        yield
    except UserError:
        for folder in missing:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (the run wrote something), or already gone
                break
        raise


def out_removed_if_refused(command: Callable) -> Callable:
    """A command whose `out` folder `removed_if_refused` cleans up (typer reads the wrapped signature)."""
    @functools.wraps(command)
    def run(**kwargs: object) -> object:
        with removed_if_refused(Path(str(kwargs["out"]))):
            return command(**kwargs)

    return run


def writable_file(path: str | Path, flag: str) -> Path:
    """`path` as a file this process can write (its folder made if missing), or a UserError naming `flag`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder, not a file")
    writable_folder(path.parent, flag)
    return path


def run_outputs(run: str | Path) -> None:
    """The folders of a run that analyses write into (results/, figures/)."""
    for part in ("results", "figures"):
        writable_folder(Path(run) / part, "RUN")


def at_least(flag: str, value: int | float, least: int | float) -> None:
    if not value >= least:  # `not >=` also refuses NaN
        raise UserError(f"{flag} {value}: must be at least {least}")


MAX_STEPS = 10**9  # a billion steps: at the paper's batch, 100 billion images, about 10,000 passes over its 10M


def step_count(flag: str, value: int) -> None:
    """A number of training steps from 1 to MAX_STEPS (a larger one is a typo, and no run gets there)."""
    at_least(flag, value, 1)
    if value > MAX_STEPS:
        raise UserError(f"{flag} {value}: at most {MAX_STEPS:,} steps")


def positive(flag: str, value: float | None) -> None:
    """A finite number above zero (None: the flag was not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} {value}: must be a positive number")


def fraction(flag: str, value: float | None) -> None:
    """A number strictly between 0 and 1 (None: the flag was not given)."""
    if value is not None and not 0 < value < 1:
        raise UserError(f"{flag} {value}: must be between 0 and 1")


def resume_keeps(given: dict[str, object]) -> None:
    """--resume continues a run with the config in its checkpoint: a flag that would change it is refused,
    not ignored."""
    changed = [flag for flag, value in given.items() if value is not None]
    if changed:
        raise UserError(f"{changed[0]} with --resume: a resumed run keeps the config of its checkpoint "
                        "(start a new run to change it)")


def same_config(wanted: Config, found: Config, run: Path) -> None:
    """--auto-resume goes on with a run only if the flags it was given make that run's config: a requeued job
    reruns its own command, and another command on the same folder is a mistake, not a continuation."""
    a, b = _flat(to_dict(wanted)), _flat(to_dict(found))
    differ = sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))
    if differ:
        key = differ[0]
        raise UserError(f"--auto-resume: {run} holds a run whose config differs from these flags ({key}: "
                        f"{b.get(key)!r} there, {a.get(key)!r} here); give its flags, or another --out")


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def same_data(data: str, trained_on: str | None) -> None:
    """--resume on other data than the run's would mix two corpora in one run without a word."""
    if trained_on and _place(data) != _place(trained_on):
        raise UserError(f"--data {data}: the run was trained on {trained_on}; resume it on the same data")


def _place(spec: str) -> str:
    return spec if spec == "embedded" else str(Path(spec).expanduser().resolve())


def data_exists(spec: str, flag: str) -> None:
    """A --data-like flag names something that is there, checked before the commands that read it late."""
    if spec != "embedded" and "{" not in spec and not Path(spec).exists():
        raise UserError(f"{flag} {spec}: no such file or folder")
