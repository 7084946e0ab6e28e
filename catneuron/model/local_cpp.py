"""The layer's products compiled for this CPU: `contract`, `spread` and `correlate` of `local_cpu.cpp`.

The source ships in the package and is built at first use with the system's C++ compiler (`$CXX`, else `g++`),
`-O3 -march=native`, into a shared library loaded with ctypes (no Python or torch headers: seconds, not the
minute a torch extension takes). The build is cached under `$CATNEURON_KERNEL_CACHE` (default
`$XDG_CACHE_HOME/catneuron/kernels`, `~/.cache/...` without it), keyed on the source, the compiler and the
processor's flags, since `-march=native` code runs only on processors with the same instructions. Where it
cannot be built, `available()` is false, one warning says why, and the layer keeps `local_reference`'s sweeps.
The results equal the sweeps' within float32 rounding and have the same bits on any number of threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import subprocess
import tempfile
import warnings
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from catneuron.model.local_reference import Geometry

log = logging.getLogger(__name__)

SOURCE = "local_cpu.cpp"
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
FLAGS = ["-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-pthread"]


def cache_dir() -> Path:
    """Where built libraries are kept: `$CATNEURON_KERNEL_CACHE`, else $XDG_CACHE_HOME/catneuron/kernels."""
    root = os.environ.get("CATNEURON_KERNEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "catneuron" / "kernels"


def _cpu_flags() -> str:
    """The processor's instruction-set flags (what -march=native compiles for), or "" where /proc says nothing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _compiler() -> str:
    return os.environ.get("CXX", "g++")


def library_path(source: bytes, compiler_version: str, cpu_flags: str) -> Path:
    """Where the library built from `source` by this compiler for a processor with these flags is cached."""
    key = hashlib.sha256(b"\0".join([source, compiler_version.encode(), " ".join(FLAGS).encode(),
                                     cpu_flags.encode()])).hexdigest()[:16]
    return cache_dir() / f"local_cpu-{key}.so"


def _build() -> Path:
    """The library for this source, compiler and processor: from the cache, or compiled into it (atomically: a
    temporary file renamed, so two processes building at once both end with a whole library)."""
    source = resources.files("catneuron.model").joinpath(SOURCE).read_bytes()
    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    library = library_path(source, version, _cpu_flags())
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        src = Path(work) / SOURCE
        src.write_bytes(source)
        out = Path(work) / library.name
        log.info("compiling the CPU kernels of the locally connected layer (%s, once per machine)", compiler)
        result = subprocess.run([compiler, *FLAGS, "-o", str(out), str(src)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(out, library)
    return library


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The loaded library, or None (with one warning) where it cannot be built or loaded."""
    try:
        return ctypes.CDLL(str(_build()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"catneuron: no compiled CPU kernels for the locally connected layer ({error}); using the "
                      f"slower bmm sweeps", RuntimeWarning, stacklevel=2)
        return None


def available() -> bool:
    """Whether the compiled kernels run here (built at the first call)."""
    return _library() is not None


def _call(name: str, dtype: torch.dtype, geo: Geometry, maps: int, *tensors: Tensor) -> None:
    dims = (ctypes.c_int64 * 7)(geo.height, geo.width, geo.channels, geo.kernel, geo.stride, geo.batch, maps)
    function = getattr(_library(), f"catneuron_{name}_{DTYPES[dtype]}")
    function(*(ctypes.c_void_p(t.data_ptr()) for t in tensors), dims, ctypes.c_int(torch.get_num_threads()))


def contract(image: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """codes[l] = weight[l] @ patch[l] for every position: (H, W, C, B), (L, O, P) -> (L, O, B)."""
    image, weight = image.contiguous(), weight.contiguous()
    codes = image.new_empty(weight.shape[0], weight.shape[1], geo.batch)
    _call("contract", image.dtype, geo, weight.shape[1], image, weight, codes)
    return codes


def spread(codes: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """The adjoint of `contract`: every position's weight[l]^T @ codes[l] painted into an image, overlaps summed."""
    codes, weight = codes.contiguous(), weight.contiguous()
    image = codes.new_empty(geo.height, geo.width, geo.channels, geo.batch)
    _call("spread", codes.dtype, geo, codes.shape[1], codes, weight, image)
    return image


def correlate(image: Tensor, codes: Tensor, geo: Geometry, out: Tensor | None = None) -> Tensor:
    """grad[l] = codes[l] @ patch[l]^T for every position (the weight gradient), written into `out` where given."""
    image, codes = image.contiguous(), codes.contiguous()
    shape = (codes.shape[0], codes.shape[1], geo.kernel * geo.row_fan_in)
    grad = codes.new_empty(shape) if out is None else out
    _call("correlate", image.dtype, geo, codes.shape[1], image, codes, grad)
    return grad
