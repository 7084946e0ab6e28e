"""The watch's statistics: the standard error bound, the Wilson interval, and a verdict whose best point is a
trained one."""

import pytest

from catneuron.analysis.emergence import MIN_IMAGES, SE_BOUND, emergence_verdict, standard_error, wilson


def test_the_minimum_is_where_the_standard_error_meets_the_bound():
    assert standard_error(MIN_IMAGES) <= SE_BOUND < standard_error(MIN_IMAGES - 1)
    assert MIN_IMAGES == 400 and standard_error(112) == pytest.approx(0.0472, abs=1e-4)


def test_wilson_interval_against_known_values():
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0.9, 112) == pytest.approx((0.8305, 0.9430), abs=1e-4)  # worked by hand
    low, high = wilson(1.0, 40)
    assert high == 1.0 and low == pytest.approx(0.9124, abs=1e-4)  # not zero-width at the edge
    assert wilson(0.7, 1000)[1] - wilson(0.7, 1000)[0] < wilson(0.7, 100)[1] - wilson(0.7, 100)[0]


def record(images: int, value: float) -> dict:
    return {"record": "watch", "images": images, "concepts": {"faces": {"upper_heldout": value}}}


def test_the_untrained_network_is_never_the_best_point():
    records = [record(0, 0.80), record(100, 0.70), record(200, 0.75)]
    base = {"concepts": {"faces": {"bar": 0.72, "n_positive": 39, "n_negative": 73}}}
    verdict = emergence_verdict(records, base, "faces")
    assert verdict["best"]["images"] == 200 and verdict["best"]["upper_heldout"] == 0.75
    assert "the untrained network (0 images) scored higher, 80.0%" in verdict["text"]
    low, high = wilson(0.75, 112)
    assert f"75.0% held-out (95% interval {100 * low:.1f}-{100 * high:.1f}% on 112 images)" in verdict["text"]
    assert emergence_verdict([record(0, 0.8)], base, "faces")["best"]["images"] == 0  # nothing trained yet
