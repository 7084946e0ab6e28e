"""A fake CUDA device for a CPU build of torch: the CUDA code path run on fake tensors, without a GPU.

Inside `torch._subclasses.fake_tensor.FakeTensorMode` tensors on `cuda` have shapes, dtypes and devices but no data,
and mixing devices raises as it would on a GPU. A CPU build of torch has no CUDA device guard or hooks, so copies
to `cuda`, `.contiguous()` and backward fail there; `SOURCE` registers fake ones (c10's FakeGuardImpl, and hooks
that say a device exists). torch reads its CUDA hooks once, while it is imported, so the library must be loaded
before: `environment()` gives a fresh process LD_PRELOAD for it. It is compiled once with the system's g++ (about
20 s, then cached). The alternative, a CUDA build of torch, runs fake tensors without it but is gigabytes to
install (docs/scale.md).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SOURCE = r"""
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/FakeGuardImpl.h>

namespace at {
namespace {
// torch creates its hooks by this name: here a device that exists, whose pinned memory is ordinary memory.
struct CUDAHooks : CUDAHooksInterface {
  explicit CUDAHooks(CUDAHooksArgs) {}
  void init() const override {}
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasCUDA() const override { return true; }
  bool hasPrimaryContext(DeviceIndex) const override { return true; }
  DeviceIndex deviceCount() const override { return 1; }
  DeviceIndex getCurrentDevice() const override { return 0; }
  Allocator* getPinnedMemoryAllocator() const override { return c10::GetCPUAllocator(); }
  bool isPinnedPtr(const void*) const override { return true; }
};
}  // namespace
REGISTER_CUDA_HOOKS(CUDAHooks);
}  // namespace at
C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);
"""

# The operators that bring a value from the device to the host, making the host wait for the device.
SYNCS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.is_nonzero.default", "aten.equal.default",
         "aten.nonzero.default", "aten._to_copy.default", "aten.copy_.default"}


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "catneuron"


def library() -> Path:
    """The compiled shim for this torch, built on first use (to a temporary file, then renamed)."""
    from torch.utils import cpp_extension

    key = hashlib.sha256((SOURCE + torch.__version__).encode()).hexdigest()[:16]
    path = cache_dir() / f"fake_cuda-{key}.so"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        source, built = Path(tmp) / "fake_cuda.cpp", Path(tmp) / "fake_cuda.so"
        source.write_text(SOURCE)
        command = ["g++", "-shared", "-fPIC", "-O1", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
                   *(f"-I{p}" for p in cpp_extension.include_paths()), str(source),
                   *(f"-L{p}" for p in cpp_extension.library_paths()), "-lc10", "-ltorch_cpu", "-o", str(built)]
        subprocess.run(command, check=True, capture_output=True)
        built.replace(path)
    return path


def environment() -> dict[str, str]:
    """This process's environment, plus what a child needs to start with the fake device (nothing for a CUDA build
    of torch: it has a guard and hooks of its own)."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the kernels' launches are skipped on fake tensors, not interpreted
    if torch.version.cuda is not None:
        return env
    torch_lib = str(Path(torch.__file__).parent / "lib")
    env["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(library()), env.get("LD_PRELOAD")]))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [torch_lib, env.get("LD_LIBRARY_PATH")]))
    return env


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python args...` in a fresh process on the fake device."""
    return subprocess.run([sys.executable, *args], env=environment(), capture_output=True, text=True,
                          timeout=timeout)


def active() -> bool:
    """Whether this process has a CUDA device to put fake tensors on (the shim, or a CUDA build of torch)."""
    return torch._C._get_accelerator().type == "cuda" if hasattr(torch._C, "_get_accelerator") else False


class SyncCounter(TorchDispatchMode):
    """Counts the host's waits on the device: a CUDA value read on the host, or a copy from CUDA to the host.

    Under fake tensors a value read has no data: it is answered with 1 (finite, and a valid count or index); on
    real tensors (a real GPU run, to compare its count with the fake one's) every op runs as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in SYNCS and self._from_device(name, args, kwargs):
            self.syncs.append(name)
        if name in ("aten._local_scalar_dense.default", "aten.item.default") and _is_fake(args[0]):
            return True if args[0].dtype == torch.bool else 1
        return func(*args, **kwargs)

    @staticmethod
    def _from_device(name: str, args, kwargs) -> bool:
        source = args[1] if name == "aten.copy_.default" else args[0]
        if not isinstance(source, torch.Tensor) or source.device.type != "cuda":
            return False
        if name == "aten._to_copy.default":
            return torch.device(kwargs.get("device") or source.device).type == "cpu"
        if name == "aten.copy_.default":
            return args[0].device.type == "cpu"
        return True


def _is_fake(tensor: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(tensor, FakeTensor)


@contextmanager
def fake_device() -> Iterator[SyncCounter]:
    """Fake tensors (real ones that enter are made fake), with the host's waits on the device counted."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True), SyncCounter() as counter:
        yield counter
