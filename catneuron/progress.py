"""Progress of long work on stderr: step, rate, the loss terms, time left."""

from __future__ import annotations

import sys
import time

MAX_DAYS = 999  # past this an ETA says only that it is longer


def format_seconds(seconds: float) -> str:
    """mm:ss, h:mm:ss, or days and h:mm:ss; `?` for an ETA that is not a number."""
    if seconds != seconds:
        return "?"
    if seconds >= MAX_DAYS * 86400:  # infinity included
        return f"over {MAX_DAYS} days"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h}:{m:02d}:{s:02d}" if h or days else f"{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


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
        parts.append(f"left {format_seconds(eta)}")
        line = " | ".join(parts)
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
