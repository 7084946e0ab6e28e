"""Running the `catneuron` command in-process, as the tests of every sub-command do."""

import sys

import pytest

from catneuron.cli import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `catneuron ARGS`."""
    monkeypatch.setattr(sys, "argv", ["catneuron", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err
