"""Progress of long work on stderr: step, rate, the loss terms, time left."""

from __future__ import annotations

import shutil
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
            eta = (self.total - done) / rate if rate > 0 and self.total is not None else float("nan")
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        head = [f"{self.label} {count}", f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2g} {unit}/s"]
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
    return line[:max((width or 0) - 1, 0)] + "…"  # width is set: a line without one fits at once
