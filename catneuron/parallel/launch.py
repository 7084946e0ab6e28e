"""Starting the ranks of one replica on this machine: spawned processes in one process group on loopback.

The rendezvous is a file in a private temporary folder (torch's FileStore): no port to pick or to find
taken, and no socket at all (torch's TCP store listens on every interface and looks the peer's address
up in DNS). The ranks' gloo connections (CPU) and NCCL's own sockets (CUDA: rank i on cuda:i) bind the
loopback interface (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME). Each rank runs `fn(rank, world, *args)` with
`threads` torch threads; it computes on `catneuron.parallel.device.group_device()`. A rank
that fails stops the others; its UserError (the same on every rank: bad input) and OSError (disk full) come
back as the launcher's own, anything else as `RankFailed`, one line. Ranks die with their launcher.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
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
from catneuron.parallel.device import CPU, init_group, rank_device
from catneuron.train.signals import Interrupted, StopSignals

USER_ERROR, OS_ERROR, FAILURE = "catneuron/user-error", "catneuron/os-error", "catneuron/failure"
RESULT, INTERRUPTED = "catneuron/result", "catneuron/interrupted"
PR_SET_PDEATHSIG = 1
TIMEOUT = timedelta(minutes=30)


class RankFailed(UserError):
    """A rank died or raised: the run stopped; its last checkpoint is whatever was written before."""


def join_group(rank: int, world: int, path: str, threads: int, device: torch.device) -> dist.Store:
    """Join the process group of the launcher's store, computing on `device` (this machine's: sockets on loopback)."""
    os.environ["GLOO_SOCKET_IFNAME"] = os.environ["NCCL_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(threads)
    store = dist.FileStore(path, world + 1)
    init_group(device, rank, world, store, TIMEOUT)
    return store


def _die_with(launcher: int) -> None:
    """End this rank when its launcher ends, however it ends (kill -9 included): an orphaned rank would go on
    training and writing the run folder. Linux's parent-death signal; elsewhere the launcher's own stop."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it ended before the signal was set
        os._exit(1)


def _rank_main(rank: int, fn: Callable, world: int, path: str, threads: int, device: torch.device,
               args: tuple, launcher: int) -> None:
    _die_with(launcher)
    # A stop signal (Ctrl-C reaches the launcher too, which passes a stop on to every rank) is kept for the
    # training loop, which saves and stops at the step all ranks agree on (catneuron.train.signals).
    with StopSignals(escalate=False):
        _run_rank(rank, fn, world, path, threads, device, args)


def _run_rank(rank: int, fn: Callable, world: int, path: str, threads: int, device: torch.device,
              args: tuple) -> None:
    store = join_group(rank, world, path, threads, rank_device(device, rank))
    try:
        result = fn(rank, world, *args)
        if result is not None:
            store.set(RESULT, json.dumps(result))
    except Interrupted as e:  # saved: the launcher reports it as its own
        store.compare_set(INTERRUPTED, "", str(e.signum))
    except UserError as e:
        store.compare_set(USER_ERROR, "", str(e))
        raise SystemExit(2) from None
    except OSError as e:  # the machine refused (disk full): exit 1, as one process does
        store.compare_set(OS_ERROR, "", json.dumps([e.errno, e.strerror or str(e), e.filename]))
        raise SystemExit(1) from None
    except Exception as e:
        # The first failure is the cause; the others' (peers gone) follow from it.
        store.compare_set(FAILURE, "", f"rank {rank} of {world} failed: {type(e).__name__}: {e}".splitlines()[0])
        raise
    finally:
        dist.destroy_process_group()


def _wait(processes: list) -> list[int | None] | None:
    """Wait until every rank has returned (None) or one has failed: then the exit codes as they were (None: still
    running), and the others are stopped."""
    alive = list(processes)
    while alive:
        connection.wait([p.sentinel for p in alive])
        for process in [p for p in alive if not p.is_alive()]:
            process.join()
            alive.remove(process)
            if process.exitcode != 0:
                codes = [p.exitcode for p in processes]
                _stop(processes)
                return codes
    return None


def _stop(processes: list) -> None:
    """Kill the ranks still running (a SIGTERM would only ask them to save, which needs every rank)."""
    for process in processes:
        if process.is_alive():
            process.kill()
    for process in processes:
        process.join()


def _cause(codes: list[int | None], store: dist.Store, world: int) -> Exception:
    """Why the ranks stopped: a rank killed from outside, else the first rank's error."""
    for rank, code in enumerate(codes):
        if code is not None and code < 0:
            return RankFailed(f"rank {rank} of {world} died ({signal.Signals(-code).name})")
    if store.check([USER_ERROR]):
        return UserError(store.get(USER_ERROR).decode())
    if store.check([OS_ERROR]):
        errno, strerror, filename = json.loads(store.get(OS_ERROR).decode())
        return OSError(errno, strerror, filename)
    if store.check([FAILURE]):
        return RankFailed(store.get(FAILURE).decode())
    return RankFailed(f"the {world} ranks stopped (exit statuses {', '.join(str(c) for c in codes)})")


def run_ranks(fn: Callable, world: int, args: tuple = (), threads: int = 1, device: torch.device = CPU) -> Any:
    """Run `fn(rank, world, *args)` in `world` spawned processes (fn and args picklable) until all return;
    what a rank returned other than None (JSON), or None. `device`: cpu, or cuda for a GPU per rank.

    A stop signal to the launcher (Ctrl-C, SIGTERM, SIGHUP) is passed on to every rank, which save and stop
    together; then the launcher raises Interrupted. A second one kills the ranks at once."""
    with tempfile.TemporaryDirectory(prefix="catneuron-ranks-") as folder:
        path = str(Path(folder) / "store")
        store = dist.FileStore(path, world + 1)
        processes = mp.start_processes(_rank_main, args=(fn, world, path, threads, device, args, os.getpid()),
                                       nprocs=world, join=False, start_method="spawn").processes

        def pass_on(signum: int) -> None:
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signum)

        with StopSignals(then=pass_on) as signals:
            try:
                failed = _wait(processes)
            except KeyboardInterrupt:
                _stop(processes)
                raise
        if failed is not None:
            raise _cause(failed, store, world)
        if store.check([INTERRUPTED]):
            raise Interrupted("the ranks saved and stopped", signals.received or int(store.get(INTERRUPTED)))
        return json.loads(store.get(RESULT)) if store.check([RESULT]) else None


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, world size) when this process is one of torchrun's workers (a cluster launch), else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def leads() -> bool:
    """Whether this process reports and writes the run folder: any process but torchrun's ranks other than 0."""
    return (torchrun_rank() or (0, 1))[0] == 0


def ranks_here(world: int) -> int:
    """How many of the `world` ranks run on this machine: torchrun's workers on this node, else all of them."""
    return int(os.environ["LOCAL_WORLD_SIZE"]) if torchrun_rank() is not None else world


def run_this_rank(fn: Callable, world: int, args: tuple = (), threads: int = 1, device: torch.device = CPU) -> Any:
    """Under torchrun: join its process group (env://; gloo on the interfaces torchrun was told to use, or
    NCCL with local rank i on cuda:i) and run `fn(rank, world, *args)` here; torchrun started the other ranks
    and stops them if one fails."""
    rank, size = torchrun_rank() or (0, 1)  # called only under torchrun
    if size != world:
        raise UserError(f"--partitions: the grid has {world} blocks but torchrun started {size} processes "
                        f"(--nproc-per-node x --nnodes must be {world})")
    torch.set_num_threads(threads)
    init_group(rank_device(device, int(os.environ["LOCAL_RANK"])), rank, world, None, TIMEOUT)
    try:
        return fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
