"""catneuron: the 'cat neuron' system of Le et al. (ICML 2012). `catneuron.features(run, images)` is the
features API; it is imported on first use, so `import catneuron` stays light (no torch)."""

from __future__ import annotations

from typing import Any

__all__ = ["features"]


def __getattr__(name: str) -> Any:
    if name == "features":
        from catneuron.analysis.features import features

        return features
    raise AttributeError(f"module 'catneuron' has no attribute {name!r}")
