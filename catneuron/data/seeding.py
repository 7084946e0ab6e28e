"""Per-step random generators: batches are a pure function of (seed, step), so resume is exact."""

from __future__ import annotations

import numpy as np


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one step: independent of how many steps ran before."""
    return np.random.default_rng([seed, stream, step])
