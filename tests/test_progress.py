"""The progress line: within the terminal's width, the watch's value kept longest."""

import sys

import pytest

from catneuron.progress import Progress, fit

TERMS = {f"{kind}_{s}": 1234.5678 for s in (1, 2, 3) for kind in ("recon", "sparsity")}
WATCH = {"faces s2/3": "61.2% (bar 64.0%) @1,200"}


def test_fit_drops_numbers_before_the_watch_and_never_exceeds_the_width():
    head = ["step 100/1000", "1,234 img/s"]
    full = fit(head, TERMS | WATCH, "left 01:02", None)
    assert len(full) > 150 and full.count("|") == 9  # a log file (no width) keeps every field
    line = fit(head, TERMS | WATCH, "left 01:02", 79)
    assert len(line) <= 79 and "faces s2/3 61.2% (bar 64.0%) @1,200" in line and "sparsity_3" not in line
    assert line.endswith("left 01:02")
    assert len(fit(head, TERMS | WATCH, "left 01:02", 30)) <= 30


@pytest.mark.parametrize("columns", [80, 120])
def test_the_line_on_a_terminal_fits_its_width(monkeypatch, capsys, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    Progress(1000, "step").update(100, 1234.0, "img", TERMS | WATCH, eta=62)
    line = capsys.readouterr().err.split("\r\x1b[K")[-1]
    assert len(line) <= columns - 1 and line.startswith("step 100/1000 | 1,234 img/s")
