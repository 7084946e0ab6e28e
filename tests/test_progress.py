"""The progress line: its time left readable for any value a run can produce; within the terminal's width, the
watch's value kept longest."""

import sys

import pytest

from catneuron.progress import Progress, fit, format_seconds


def test_time_left_is_readable_for_huge_and_non_numbers():
    """`--steps` near 1e23 printed `left 733700761520973778:29:20`; infinity raised OverflowError."""
    assert format_seconds(65) == "01:05"
    assert format_seconds(3 * 3600 + 61) == "3:01:01"
    assert format_seconds(2 * 86400 + 3600 + 5) == "2d 1:00:05"
    assert format_seconds(2.6e21) == format_seconds(float("inf")) == "over 999 days"
    assert format_seconds(float("nan")) == "?"


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
