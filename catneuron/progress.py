"""Progress of long work on stderr: step, rate, the loss terms, time left."""

from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One status line, rewritten in place on a terminal and printed at most every `every` seconds elsewhere."""

    def __init__(self, total: int | None, label: str, enabled: bool = True, every: float = 5.0) -> None:
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int, rate: float, unit: str, fields: dict[str, float] | None = None,
               eta: float | None = None, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and not self.tty and now - self.last < self.every:
            return
        self.last = now
        if eta is None:
            eta = (self.total - done) / rate if rate > 0 and self.total is not None else float("nan")
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        parts = [f"{self.label} {count}", f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2g} {unit}/s"]
        parts += [f"{k} {v:.4g}" for k, v in (fields or {}).items()]
        parts.append(f"left {format_seconds(eta)}" if eta == eta else "left ?")
        line = " | ".join(parts)
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
