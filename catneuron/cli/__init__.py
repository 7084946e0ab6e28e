"""The `catneuron` command. Each sub-command lives in its own module of this package."""

from __future__ import annotations

import sys

from catneuron.cli.app import app
from catneuron.errors import UserError

# Importing a command module registers its sub-command on `app`.
from catneuron.cli import info, train  # noqa: E402,F401  isort: skip


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    try:
        app(standalone_mode=False)
    except UserError as e:
        print(f"catneuron: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("catneuron: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, (click.ClickException, click.exceptions.Abort)):
            message = e.format_message() if isinstance(e, click.ClickException) else "aborted"
            print(f"catneuron: error: {message}", file=sys.stderr)
            sys.exit(2)
        raise
