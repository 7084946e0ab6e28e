"""One writer per run folder: an OS file lock that `train` (new or resumed) and `demo` hold while they write.

Two trainers on one folder would leave one's config beside the other's checkpoint and metrics. The lock is
`flock` on RUN/.catneuron.lock: the kernel releases it when its holder exits, however it exits (kill -9
included), so a lock is never stale. Readers (`evaluate`, `report`, `visualize`) take none. Holding the lock
also makes it safe to remove the temporary files a writer killed mid-write left behind (files.atomic).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from catneuron.errors import UserError
from catneuron.store.files import file_mode, remove_stale_temporaries

LOCK = ".catneuron.lock"


@contextmanager
def writing(run: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold `run`'s writer lock for the block (the folder is made if missing), or refuse in one line naming
    `flag` when another process holds it. The lock file is removed on the way out (one a kill -9 leaves is
    harmless: the kernel has released its lock)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    path = run / LOCK
    fd = _acquire(path, flag, run)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        remove_stale_temporaries(run)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a process waiting on this file finds it gone, and retries
        os.close(fd)  # releases the lock


def _acquire(path: Path, flag: str, run: Path) -> int:
    """The locked descriptor of `path`: the file there now (one its holder removed on release is tried again)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{flag} {run}: another catneuron process (pid {holder}) is writing this run; wait "
                            "for it to end, or choose another folder") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
