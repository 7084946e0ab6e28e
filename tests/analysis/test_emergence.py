"""Reading a watched run's records: malformed rows (a hand edit, a cut write) are skipped and counted, never a
traceback in report, evaluate or a resumed watch; the watch's statistics: the standard error bound, the Wilson
interval, and a verdict whose best point is a trained one."""

import pytest

from catneuron.analysis.emergence import (
    MIN_IMAGES,
    SE_BOUND,
    emergence_verdict,
    latest_baselines,
    standard_error,
    watch_records,
    wilson,
)
from catneuron.analysis.plots import emergence_curves


def record(images: int, value: float) -> dict:
    stages = [{"stage": 1, "id": "s1", "accuracy": 0.6, "heldout_accuracy": 0.55, "auc": 0.6},
              {"stage": 2, "id": "s2", "accuracy": value, "heldout_accuracy": value, "auc": 0.7}]
    return {"record": "watch", "images": images, "step": images // 10,
            "concepts": {"faces": {"stages": stages, "upper_heldout": value}}}


MALFORMED = [
    {"record": "watch", "concepts": record(5, 0.9)["concepts"]},  # no images (KeyError before)
    {"record": "watch", "images": 7, "concepts": ["faces"]},  # concepts not a mapping (AttributeError)
    {"record": "watch", "images": 9, "concepts": {"faces": {"stages": [{"stage": 2}], "upper_heldout": 0.99}}},
    {"record": "watch", "images": 11, "concepts": {"faces": {"stages": [], "upper_heldout": "high"}}},  # TypeError
    {"record": "watch", "images": 13, "concepts": {"faces": None}},
]


def test_malformed_watch_rows_are_skipped_and_counted(tmp_path):
    base = {"record": "watch_baselines", "concepts": {"faces": {"bar": 0.6, "n_positive": 4, "n_negative": 8}}}
    rows = [base, record(0, 0.5), *MALFORMED, record(20, 0.7),
            {"record": "watch_baselines", "concepts": {"faces": {"bar": "?"}}}]
    said = []
    records = watch_records(rows, said.append)
    assert [r["images"] for r in records] == [0, 20]
    assert said == ["catneuron: metrics.jsonl: skipped 5 malformed watch record(s)"]
    assert latest_baselines(rows) is base
    verdict = emergence_verdict(records, latest_baselines(rows), "faces")
    assert verdict["best"]["images"] == 20 and verdict["best"]["above_bar"]
    drawn = emergence_curves(rows, tmp_path / "emergence.png")
    assert drawn["faces"]["stage 2"] == [(0.0, 50.0), (20.0, 70.0)]




def test_the_minimum_is_where_the_standard_error_meets_the_bound():
    assert standard_error(MIN_IMAGES) <= SE_BOUND < standard_error(MIN_IMAGES - 1)
    assert MIN_IMAGES == 400 and standard_error(112) == pytest.approx(0.0472, abs=1e-4)


def test_wilson_interval_against_known_values():
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson(0.9, 112) == pytest.approx((0.8305, 0.9430), abs=1e-4)  # worked by hand
    low, high = wilson(1.0, 40)
    assert high == 1.0 and low == pytest.approx(0.9124, abs=1e-4)  # not zero-width at the edge
    assert wilson(0.7, 1000)[1] - wilson(0.7, 1000)[0] < wilson(0.7, 100)[1] - wilson(0.7, 100)[0]


def test_the_untrained_network_is_never_the_best_point():
    records = [record(0, 0.80), record(100, 0.70), record(200, 0.75)]
    base = {"concepts": {"faces": {"bar": 0.72, "n_positive": 39, "n_negative": 73}}}
    verdict = emergence_verdict(records, base, "faces")
    assert verdict["best"]["images"] == 200 and verdict["best"]["upper_heldout"] == 0.75
    assert "the untrained network (0 images) scored higher, 80.0%" in verdict["text"]
    low, high = wilson(0.75, 112)
    assert f"75.0% held-out (95% interval {100 * low:.1f}-{100 * high:.1f}% on 112 images)" in verdict["text"]
    assert emergence_verdict([record(0, 0.8)], base, "faces")["best"]["images"] == 0  # nothing trained yet
