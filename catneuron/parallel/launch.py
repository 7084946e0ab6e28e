"""Starting the ranks of one replica on this machine: spawned processes in one process group on loopback.

The rendezvous is a file in a private temporary folder (torch's FileStore): no port to pick or to find
taken, and no socket at all (torch's TCP store listens on every interface and looks the peer's address
up in DNS). The ranks' gloo connections bind the loopback interface (GLOO_SOCKET_IFNAME=lo). Each rank
runs `fn(rank, world, *args)` with `threads` torch threads. A rank
that fails stops the others; its UserError (the same on every rank: bad input) comes back as the
launcher's own, anything else as `RankFailed`, one line.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable
from datetime import timedelta
from multiprocessing import connection
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from catneuron.errors import UserError

USER_ERROR, FAILURE, RESULT = "catneuron/user-error", "catneuron/failure", "catneuron/result"
TIMEOUT = timedelta(minutes=30)


class RankFailed(UserError):
    """A rank died or raised: the run stopped; its last checkpoint is whatever was written before."""


def join_group(rank: int, world: int, path: str, threads: int) -> dist.Store:
    """Join the process group of the launcher's store (gloo: the ranks compute on CPU)."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(threads)
    store = dist.FileStore(path, world + 1)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=TIMEOUT)
    return store


def _rank_main(rank: int, fn: Callable, world: int, path: str, threads: int, args: tuple) -> None:
    # Ctrl-C goes to the launcher, which stops every rank: a rank alone cannot stop its group cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = join_group(rank, world, path, threads)
    try:
        result = fn(rank, world, *args)
        if result is not None:
            store.set(RESULT, json.dumps(result))
    except UserError as e:
        store.compare_set(USER_ERROR, "", str(e))
        raise SystemExit(2) from None
    except Exception as e:
        # The first failure is the cause; the others' (peers gone) follow from it.
        store.compare_set(FAILURE, "", f"rank {rank} of {world} failed: {type(e).__name__}: {e}".splitlines()[0])
        raise
    finally:
        dist.destroy_process_group()


def _wait(processes: list) -> bool:
    """Wait until every rank has returned (True) or one has failed (False; the others are then stopped)."""
    alive = list(processes)
    while alive:
        connection.wait([p.sentinel for p in alive])
        for process in [p for p in alive if not p.is_alive()]:
            process.join()
            alive.remove(process)
            if process.exitcode != 0:
                _stop(processes)
                return False
    return True


def _stop(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()


def _cause(processes: list, store: dist.Store, world: int) -> UserError:
    """Why the ranks stopped: a rank killed from outside, else the first rank's error."""
    for rank, process in enumerate(processes):
        if process.exitcode is not None and process.exitcode < 0 and -process.exitcode != signal.SIGTERM:
            return RankFailed(f"rank {rank} of {world} died ({signal.Signals(-process.exitcode).name})")
    if store.check([USER_ERROR]):
        return UserError(store.get(USER_ERROR).decode())
    if store.check([FAILURE]):
        return RankFailed(store.get(FAILURE).decode())
    codes = ", ".join(str(p.exitcode) for p in processes)
    return RankFailed(f"the {world} ranks stopped (exit statuses {codes})")


def run_ranks(fn: Callable, world: int, args: tuple = (), threads: int = 1) -> Any:
    """Run `fn(rank, world, *args)` in `world` spawned processes (fn and args picklable) until all return;
    what a rank returned other than None (JSON), or None."""
    with tempfile.TemporaryDirectory(prefix="catneuron-ranks-") as folder:
        path = str(Path(folder) / "store")
        store = dist.FileStore(path, world + 1)
        processes = mp.start_processes(_rank_main, args=(fn, world, path, threads, args), nprocs=world,
                                       join=False, start_method="spawn").processes
        try:
            finished = _wait(processes)
        except KeyboardInterrupt:
            _stop(processes)
            raise
        if not finished:
            raise _cause(processes, store, world)
        return json.loads(store.get(RESULT)) if store.check([RESULT]) else None


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) when this process is one of torchrun's workers (a cluster launch), else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def run_this_rank(fn: Callable, world: int, args: tuple = (), threads: int = 1) -> Any:
    """Under torchrun: join its process group (env://, gloo on the interfaces torchrun was told to use)
    and run `fn(rank, world, *args)` here; torchrun started the other ranks and stops them if one fails."""
    rank, size = torchrun_rank()
    if size != world:
        raise UserError(f"--partitions: the grid has {world} blocks but torchrun started {size} processes "
                        f"(--nproc-per-node x --nnodes must be {world})")
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        return fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
