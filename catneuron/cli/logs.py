"""What the library reports, shown by the command: the `catneuron` loggers' lines, as they are written.

Library code never prints; it logs to `logging.getLogger(__name__)`. The command shows those lines
unchanged, notices (INFO) on stdout and warnings on stderr, read from `sys.stdout`/`sys.stderr` at each
line (so that a redirected or captured stream gets them). Without the command (a script, a notebook) the
warnings reach Python's last-resort handler and the notices stay quiet, as a library's should.
"""

from __future__ import annotations

import logging
import sys


class Lines(logging.Handler):
    """Each record's message on a line of its own: INFO and below on stdout, WARNING and above on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            print(self.format(record), file=stream, flush=True)
        except Exception:  # a closed stream, an unencodable name: logging's own way of not failing the work
            self.handleError(record)


def show_library_lines() -> None:
    """Route the `catneuron` loggers to the terminal (once, however often a command runs in one process)."""
    root = logging.getLogger("catneuron")
    if not any(isinstance(h, Lines) for h in root.handlers):
        root.addHandler(Lines())
    root.setLevel(logging.INFO)
    root.propagate = False
