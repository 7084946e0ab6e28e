"""One writer per run folder: the OS lock, the one-line refusal, and the temporary files of dead writers."""

from __future__ import annotations

import os
import subprocess

import pytest

from catneuron.errors import UserError
from catneuron.store.lock import LOCK, writing


def test_a_second_writer_is_refused_and_the_lock_is_gone_after(tmp_path):
    refused = rf"--out {tmp_path}: another catneuron process \(pid {os.getpid()}\) is writing this run"
    with writing(tmp_path), pytest.raises(UserError, match=refused), writing(tmp_path):
        pass
    assert not (tmp_path / LOCK).exists()
    with writing(tmp_path):  # free again
        pass


def test_a_writer_killed_outright_leaves_no_lock_behind(tmp_path):
    """kill -9 leaves the lock file, not the lock: the kernel released it with the process."""
    holder = subprocess.Popen(["python3", "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | "
                               "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print(flush=True); time.sleep(60)",
                               str(tmp_path / LOCK)], stdout=subprocess.PIPE)
    holder.stdout.readline()
    with pytest.raises(UserError, match="another catneuron process"), writing(tmp_path):
        pass
    holder.kill()
    holder.wait()
    with writing(tmp_path):
        pass


def test_taking_the_lock_removes_the_temporary_files_of_dead_writers_only(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".checkpoint.safetensors.tmp-{dead.pid}"
    live = tmp_path / f".metrics.jsonl.tmp-{os.getpid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    with writing(tmp_path):
        assert not stale.exists() and live.exists()
