"""The progress line's time left: readable for any value a run can produce."""

from catneuron.progress import format_seconds


def test_time_left_is_readable_for_huge_and_non_numbers():
    """`--steps` near 1e23 printed `left 733700761520973778:29:20`; infinity raised OverflowError."""
    assert format_seconds(65) == "01:05"
    assert format_seconds(3 * 3600 + 61) == "3:01:01"
    assert format_seconds(2 * 86400 + 3600 + 5) == "2d 1:00:05"
    assert format_seconds(2.6e21) == format_seconds(float("inf")) == "over 999 days"
    assert format_seconds(float("nan")) == "?"
