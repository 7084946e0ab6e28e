"""What every benchmark measures the same way: this machine's dense matmul rate, sampled in the same run as what
it is compared with (a shared machine's rate drifts), a busy process beside a run (another user's job), and a
measurement in a fresh process (its own peak memory, thread count and OpenMP settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def uptime() -> str:
    """`uptime`'s line (the load averages): printed beside every number a shared machine can distort."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dense_gflops(device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
                 n: int | None = None, repeats: int = 10) -> float:
    """GFLOP/s of an n x n matmul (n 2048 on the CPU, 8192 on a GPU), after one untimed product."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


@contextmanager
def busy_process() -> Iterator[None]:
    """Another process that keeps one core busy (pure-Python spinning) while the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        yield
    finally:
        spinner.kill()
        spinner.wait()


def in_fresh_process(script: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `script --one ARGS` in a new interpreter (with `env` added to this one's) and return the JSON it
    prints, or {"error": its last line of stderr} when it fails."""
    out = subprocess.run([sys.executable, script, "--one", *args], env=os.environ | (env or {}),
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:100]}
    return json.loads(out.stdout)
