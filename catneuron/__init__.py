"""catneuron: the 'cat neuron' system of Le et al. (ICML 2012).

`catneuron.features(run, images)` is the features API, `catneuron.model.LocallyConnected2d` the layer,
`catneuron.UserError` (a ValueError) what bad input raises, `catneuron.__version__` the installed version.
Each is imported on first use, so `import catneuron` stays light (no torch)."""

import os

# OpenMP's idle threads sleep at once instead of spinning for a while. libgomp reads this when torch loads, so
# it is set here, before any catneuron module imports torch; a user's own setting wins. A spinning thread takes
# the core that a descheduled thread of its team needs when other processes share the machine: the `small`
# preset trained 5x slower beside other jobs with spinning threads (benchmarks/small_step.py, docs/model.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
del os

__all__ = ["UserError", "features", "model"]


def __getattr__(name: str) -> object:
    if name == "features":
        from catneuron.analysis.features import features

        return features
    if name == "UserError":
        from catneuron.errors import UserError

        return UserError
    if name == "model":
        import importlib

        return importlib.import_module("catneuron.model")
    if name == "__version__":
        from catneuron.version import catneuron_version

        return catneuron_version()
    raise AttributeError(f"module 'catneuron' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
