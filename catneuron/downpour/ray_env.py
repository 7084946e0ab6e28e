"""Starting Ray for a training run: a private local instance that talks to nothing but this machine, or an
existing cluster by address.

Ray 2.60 left to itself, even with `_node_ip_address="127.0.0.1"`:
- guesses a "remotely reachable" node address by connecting a UDP socket towards 8.8.8.8
  (`services.resolve_ip_for_localhost`, and the C++ side); `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes
  it keep the loopback address it was given;
- has its dashboard process ask the cloud-metadata address 169.254.169.254 (and resolve
  metadata.google.internal) at start, whatever the usage-stats setting
  (`UsageStatsHead.run` -> `get_cluster_config_to_report`); those requests go through `requests`, so an
  HTTP proxy on a closed loopback port, with loopback exempt, turns them into an immediate local refusal;
- enables token authentication for new local clusters and writes the token to ~/.ray/auth_token.
  Loopback is not private on a shared machine: any local user can reach the instance's ports and submit
  work that runs as the trainer. So the private instance requires a token (`RAY_AUTH_MODE=token`), a
  fresh random one per process, passed to Ray's processes in their environment (which only their owner
  and root can read) and written to no file; a client without it is refused.
tests/train/test_downpour.py proves, under strace, that a local run connects to nothing outside 127.0.0.0/8,
and test_ray_env.py that a second client without the token is refused.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Port 9 (discard) on loopback: nothing listens there, so a metadata request fails at once, locally.
_CLOSED_PROXY = f"http://{LOOPBACK}:9"
_NO_PROXY = f"{LOOPBACK},localhost,::1"
LOCAL_ENV = {
    # Ray runs workers at nice 15; here the workers are the training, and compete with nothing of ours.
    "RAY_worker_niceness": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "http_proxy": _CLOSED_PROXY, "HTTP_PROXY": _CLOSED_PROXY,
    "no_proxy": _NO_PROXY, "NO_PROXY": _NO_PROXY,
}


# One token per process: Ray's C++ token loader caches the first token it reads for the process's life.
_TOKEN = secrets.token_hex(32)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set variables for the processes Ray spawns while inside; put the caller's environment back after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _keep_loopback() -> None:
    """Make this process's Ray keep 127.0.0.1 rather than swap it for the address that routes to 8.8.8.8.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is read when ray is first imported; a caller may have imported it.
    """
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _reload_auth() -> None:
    """Make this process's Ray read RAY_AUTH_MODE and the token again: its config was read when ray was
    first imported, perhaps before the environment said token mode (as Ray's own `_enable_token_auth` does)."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # not in its stubs

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# Waits for its parent (the driver) to end: EOF on stdin without the word that a clean shutdown writes. Then it
# kills every process that carries the instance's marker in its environment (the raylet's workers and agents),
# scan after scan until one finds none: a process forked during a scan (the raylet starting a worker) carries the
# marker too, and only a marked process can start another, so once none is left none can come.
_REAPER = """
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
if not sys.stdin.buffer.read():
    marker = ("CATNEURON_RAY=" + sys.argv[1]).encode()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        killed = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read().split(b"\\0"):
                        os.kill(int(pid), signal.SIGKILL)
                        killed += 1
            except OSError:
                pass
        if not killed:
            break
        time.sleep(0.2)
"""


@contextmanager
def _reaped() -> Iterator[dict[str, str]]:
    """Ray's processes die with the driver, however it ends: Ray makes its head processes die with it (a
    parent-death signal), but the raylet's workers and agents linger for a minute or two after a kill -9. A
    small process of our own outlives the driver and kills what carries the marker this gives (in the
    environment that Ray's processes inherit); a clean exit tells it there is nothing to do."""
    marker = secrets.token_hex(8)
    reaper = subprocess.Popen([sys.executable, "-c", _REAPER, marker], stdin=subprocess.PIPE,
                              start_new_session=True) if sys.platform.startswith("linux") else None
    try:
        yield {"CATNEURON_RAY": marker}
    finally:
        if reaper is not None:
            reaper.communicate(b"done")


@contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[None]:
    """A private Ray instance on loopback for the duration of the block: no dashboard, no usage stats, a
    token only this process knows, no traffic off this machine; shut down (all its processes) on exit, and
    killed if the driver is (`_reaped`)."""
    import ray

    try:
        with _reaped() as marker, _environment(LOCAL_ENV | marker | {"RAY_AUTH_TOKEN": _TOKEN}):
            _keep_loopback()
            _reload_auth()
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address=LOOPBACK,
                     log_to_driver=False, logging_level=logging.WARNING)
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        _reload_auth()  # the caller's settings again, for a later ray.init in this process


@contextmanager
def ray_session(address: str | None, log: Path | None = None) -> Iterator[None]:
    """Ray for one run: the instance already running in this process (left running), the cluster at
    `address` (disconnected after; its authentication is the cluster's: RAY_AUTH_MODE and the token as Ray
    finds them), or a private local one (stopped after). `log`: where Ray's messages to the driver go (see
    `_messages_to`) rather than the user's terminal."""
    import ray

    if ray.is_initialized():
        with _messages_to(log):
            yield
    elif address:
        if address.rsplit(":", 1)[0] in (LOOPBACK, "localhost"):
            _keep_loopback()  # a head started on loopback listens there only
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        try:
            with _messages_to(log):
                yield
        finally:
            ray.shutdown()
    else:
        with local_ray(), _messages_to(log):
            yield


@contextmanager
def _messages_to(log: Path | None) -> Iterator[None]:
    """Ray's messages to the driver into `log`, which starts with where Ray's own logs are.

    `log_to_driver=False` keeps the workers' output in Ray's session folder, but the driver still prints the
    cluster's error messages (`(raylet) The node ... has been marked dead ...`, a task retried on a restarting
    actor, ...) through `ray._private.worker.print_to_stdstream`: 15 to 21 lines when a node dies; and its C++
    core writes its errors to the process's stderr (a line a second once the head is gone). The run reports what
    it does about a death in its own words; Ray's are kept here: file descriptor 2 goes to `log`, and Python's
    `sys.stderr` (the progress line, the run's messages) stays on the terminal."""
    if log is None:
        yield
        return
    import ray._private.worker as ray_worker

    node = ray_worker.global_worker.node
    session = node.get_session_dir_path() if node is not None else "unknown"
    with open(log, "a") as out:
        out.write(f"Ray's logs: {session}/logs (on each node of the cluster)\n")
        out.flush()
        terminal = os.dup(2)
        stream = sys.stderr
        if stream is sys.__stderr__:  # not a test's capture: keep Python's writes where they went
            sys.stderr = open(terminal, "w", buffering=1, closefd=False)  # noqa: SIM115 (restored below)
        os.dup2(out.fileno(), 2)

        def keep(data: dict, ignore_prefix: bool) -> None:
            for line in data.get("lines", []):
                out.write(f"({data.get('pid', '?')}) {line}\n")
            out.flush()

        shown, ray_worker.print_to_stdstream = ray_worker.print_to_stdstream, keep
        try:
            yield
        finally:
            ray_worker.print_to_stdstream = shown
            sys.stderr.flush()
            os.dup2(terminal, 2)
            os.close(terminal)
            sys.stderr = stream
