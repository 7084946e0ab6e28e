"""Fixtures shared across the suite."""

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from raykit import wait_gone


def write_images(folder: Path, count: int, seed: int, corrupt: int = 0, size: tuple[int, int] = (20, 24)) -> Path:
    """`count` random RGB PNGs (and `corrupt` truncated JPEGs) in a new folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i in range(corrupt):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder


@pytest.fixture
def image_folder() -> Callable[..., Path]:
    return write_images


def write_bomb(path: Path, side: int = 20000) -> Path:
    """A PNG of a few dozen bytes whose header claims side x side pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def bomb_png() -> Callable[..., Path]:
    return write_bomb


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test tensors are tiny: intra-op threads only add hand-offs, which cost seconds on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def missing_tool(reason: str) -> None:
    """A test whose system tool is missing: skipped with `reason` on a workstation, failed under CI (which sets
    CI=true and installs the tool, .ci/run), so that a green CI always holds the proofs that need it."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}, under CI", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, for the report's browser test."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing_tool("chromium is not installed (.ci/run installs it)")
    return found


@pytest.fixture(autouse=True, scope="session")
def kernel_cache():
    """The compiled CPU kernels are built once for the session (~10 s of CPU on a fresh machine, then cached): child
    processes run with another HOME (the loopback proofs) find the same build instead of compiling their own."""
    from catneuron.model import local_cpp

    os.environ.setdefault("CATNEURON_KERNEL_CACHE", str(local_cpp.cache_dir()))
    yield


@pytest.fixture
def isolate() -> list[str]:
    """For the loopback proofs under strace: the command prefix that runs a program in a network namespace of
    its own with only `lo` up (empty where one cannot be made); without a usable strace the test is skipped,
    or fails under CI."""
    if shutil.which("strace") is None or subprocess.run(["strace", "-f", "-o", "/dev/null", "true"]).returncode:
        missing_tool("strace is not usable here")
    if shutil.which("unshare") and shutil.which("ip") and subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True).returncode == 0:
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    return []


@pytest.fixture(scope="session")
def private_ray() -> Iterator[None]:
    """One private local Ray for every Ray test of the session (starting one costs seconds and ~400 MiB);
    afterwards, none of its processes may be left."""
    pytest.importorskip("ray")
    from catneuron.downpour.ray_env import local_ray

    # A short temp dir of our own: Ray's socket paths must stay under 108 bytes, and it marks our processes.
    temp = tempfile.mkdtemp(prefix="cnray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp
    try:
        with local_ray(num_cpus=2):
            yield
        assert not wait_gone(temp.encode()), "Ray processes outlived the tests"
    finally:
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(temp, ignore_errors=True)
