"""catneuron's version, from the installed package's metadata (pyproject.toml's `version`), without torch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def catneuron_version() -> str:
    try:
        return version("catneuron")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown"
