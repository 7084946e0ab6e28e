"""catneuron: the 'cat neuron' system of Le et al. (ICML 2012). `catneuron.features(run, images)` is the
features API; it is imported on first use, so `import catneuron` stays light (no torch)."""

from __future__ import annotations

import os
from typing import Any

# OpenMP's idle threads sleep at once instead of spinning for a while. libgomp reads this when torch loads, so
# it is set here, before any catneuron module imports torch; a user's own setting wins. A spinning thread takes
# the core that a descheduled thread of its team needs when other processes share the machine: the `small`
# preset trained 5x slower beside other jobs with spinning threads (benchmarks/small_step.py, docs/model.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["features"]


def __getattr__(name: str) -> Any:
    if name == "features":
        from catneuron.analysis.features import features

        return features
    raise AttributeError(f"module 'catneuron' has no attribute {name!r}")
