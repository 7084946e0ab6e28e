"""The `catneuron` command. Each sub-command lives in its own module of this package, imported when it runs
(cli/app.py: COMMANDS)."""

from __future__ import annotations

import sys

from catneuron.cli.app import app
from catneuron.cli.logs import show_library_lines
from catneuron.errors import UserError


def main() -> None:
    """Entry point: bad input becomes one line on stderr and exit status 2, an OS failure one line and
    exit status 1; never a traceback."""
    show_library_lines()
    try:
        code = app(standalone_mode=False)
    except UserError as e:
        print(f"catneuron: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("catneuron: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        # The machine refused (disk full, a folder gone read-only mid-run): what and where, in one line.
        where = f"{e.filename}: " if e.filename else ""
        print(f"catneuron: error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        # typer vendors click: its usage errors (unknown option, missing argument) carry these two.
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            print(f"catneuron: error: {e.format_message()}", file=sys.stderr)
            sys.exit(e.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
