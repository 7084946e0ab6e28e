"""Run the rows of a sweep on single-threaded workers, one per intra-op thread, each taking the next chunk.

A sweep is hundreds to thousands of small products. Run one after another with PyTorch's intra-op
threads, each is an OpenMP fork and barrier: when another process takes a core, every barrier
waits for a descheduled thread and a sweep slows ~100x. Here each worker runs its chunks' products
single-threaded and takes the next chunk when done, so a slowed core takes fewer chunks, and the
only wait is the end of the sweep.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import torch

CHUNKS = 32  # pieces of a sweep: enough that a worker on a slowed core takes fewer, few enough to cost little

_lock = threading.Lock()  # one sweep at a time: it sets the process's thread count while it runs
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads (a new one after a fork or a change of thread count)."""
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), workers):
        _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="catneuron-rows"))
    return _pool[2]


def chunks(count: int) -> list[range]:
    """`count` rows cut into about CHUNKS consecutive ranges, in order. The cut does not depend on the thread
    count, so a sweep that sums its chunks' results in row order gives the same float32 sum on any number
    of threads (a Downpour replica equals the single-process trainer)."""
    pieces = min(count, CHUNKS)
    bounds = [count * i // pieces for i in range(pieces + 1)]
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def run_rows(job: Callable[[range], None], count: int, device: torch.device) -> None:
    """Call `job` on chunks of range(count) covering it once (on CPU; in parallel with several threads).

    Chunks run concurrently, so `job` must write disjoint outputs for disjoint rows (or per-thread ones).
    """
    workers = torch.get_num_threads()
    if device.type != "cpu" or count == 1:
        job(range(count))
        return
    if workers == 1:
        for rows in chunks(count):
            job(rows)
        return
    grad_enabled = torch.is_grad_enabled()  # thread-local: the workers take the caller's

    def work(rows: range) -> None:
        with torch.set_grad_enabled(grad_enabled):
            job(rows)

    with _lock:
        torch.set_num_threads(1)  # each worker's products run on its own thread
        try:
            futures = [_executor(workers).submit(work, rows) for rows in chunks(count)]
            wait(futures)  # all of them, before the thread count changes back
            for future in futures:
                future.result()
        finally:
            torch.set_num_threads(workers)
