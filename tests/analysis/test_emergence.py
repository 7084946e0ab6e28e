"""Reading a watched run's records: malformed rows (a hand edit, a cut write) are skipped and counted, never a
traceback in report, evaluate or a resumed watch."""

from catneuron.analysis.emergence import emergence_verdict, latest_baselines, watch_records
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
