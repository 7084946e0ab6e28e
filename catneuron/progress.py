"""Progress of long work on stderr: step, rate, the loss terms, time left."""

from __future__ import annotations

import shutil
import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One status line, rewritten in place on a terminal and printed at most every `every` seconds elsewhere."""

    def __init__(self, total: int, label: str, enabled: bool = True, every: float = 5.0) -> None:
        self.total, self.label, self.enabled, self.every = total, label, enabled, every
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def update(self, done: int, rate: float, unit: str, fields: dict[str, float | str] | None = None,
               eta: float | None = None, final: bool = False) -> None:
        """Numbers in `fields` are shown to 4 digits, text as it is; on a terminal the line fits its width."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and not self.tty and now - self.last < self.every:
            return
        self.last = now
        if eta is None:
            eta = (self.total - done) / rate if rate > 0 else float("nan")
        head = [f"{self.label} {done}/{self.total}", f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2g} {unit}/s"]
        left = f"left {format_seconds(eta)}" if eta == eta else "left ?"
        width = shutil.get_terminal_size().columns - 1 if self.tty else None  # a log file keeps every field
        line = fit(head, fields or {}, left, width)
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def fit(head: list[str], fields: dict[str, float | str], tail: str, width: int | None) -> str:
    """The line within `width` characters: numeric fields dropped from the last while it is too long, then
    text fields (such as the watch's), then the line cut."""
    shown = {k: v if isinstance(v, str) else f"{v:.4g}" for k, v in fields.items()}
    numbers = [k for k in reversed(fields) if not isinstance(fields[k], str)]
    order = numbers + [k for k in reversed(fields) if k not in numbers]
    for drop in range(len(order) + 1):
        kept = [f"{k} {v}" for k, v in shown.items() if k not in order[:drop]]
        line = " | ".join([*head, *kept, tail])
        if width is None or len(line) <= width:
            return line
    return line[:max(width - 1, 0)] + "…"
