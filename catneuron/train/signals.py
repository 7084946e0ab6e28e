"""Stopping a run from outside: Ctrl-C (SIGINT), a scheduler's SIGTERM (Slurm, Kubernetes) and a closed terminal's
SIGHUP all ask the training loop to stop at the end of the step it is in, save and exit; one behaviour for every
trainer (docs/distributed.md, "Stopping and requeueing").

The handler only raises a flag, which the loop reads between steps, so a checkpoint is never written from the
middle of an update (nor a Ray call interrupted half-way). In the process the user started, a second signal
stops at once (KeyboardInterrupt); a rank of a model-parallel replica only ever raises the flag (a terminal's
Ctrl-C reaches it and its launcher, which passes it on: two signals that ask for one stop).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving; the CLI exits 128 + `signum` (130 for Ctrl-C, 143 for SIGTERM)
    without another word (the trainer has said where the checkpoint is)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """While inside: SIGINT, SIGTERM and SIGHUP set `received` (the first one's number) and call `then` with it.
    `escalate`: a second signal raises KeyboardInterrupt at once. Nested in another StopSignals, it starts with
    what that one received. Off the main thread (where Python cannot take signals) it does nothing."""

    def __init__(self, escalate: bool = True, then: Callable[[int], None] | None = None) -> None:
        self.escalate, self.then = escalate, then
        self.received: int | None = None
        self.previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
            outer = getattr(self.previous[signal.SIGTERM], "__self__", None)
            if isinstance(outer, StopSignals):
                self.received = outer.received
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and self.escalate:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum
            if self.then is not None:
                self.then(signum)
