"""The printed Table 1: the verdict first, rows named for what they measured, green only past both baselines."""

from rich.console import Console

from catneuron.analysis.evaluate import verdict
from catneuron.analysis.table import _cell, print_table


def result(best_stage: int = 1) -> dict:
    by_stage = [{"id": f"s{s}.pool.m0.y0.x0", "stage": s, "sublayer": "pool", "accuracy": 0.80 + 0.01 * s,
                 "threshold": 0.1, "auc": 0.8, "heldout_accuracy": 0.78 + 0.01 * s} for s in (1, 2, 3)]
    detail = {"chance": {"id": "always 'not faces'", "accuracy": 0.648, "majority": "negative"},
              "random_weights": {"id": "s1.norm.m0.y0.x0", "accuracy": 0.88, "auc": 0.9, "heldout_accuracy": 0.87},
              "linear_filter": {"id": "training image 3", "accuracy": 0.915, "auc": 0.95, "heldout_accuracy": 0.9},
              "best_first_stage": by_stage[0]}
    best = {"id": "s1.filter.m6.y0.x12", "stage": best_stage, "sublayer": "filter", "accuracy": 0.873,
            "threshold": 0.2, "auc": 0.9}
    return {"concept": "faces", "n_positive": 352, "n_negative": 648, "positive_fraction": 0.352,
            "best_neuron": best, "best_by_stage": by_stage, "heldout_accuracy": 0.85,
            "baselines": {"random_guess": 0.648, "random_weights": 0.88, "linear_filter": 0.915,
                          "best_first_stage": 0.81},
            "baselines_detail": detail, "verdict": verdict(by_stage, detail)}


def test_the_verdict_comes_first_and_rows_say_what_they_measured():
    console = Console(record=True, width=200)
    print_table([result()], console)
    text = console.export_text()
    assert text.startswith("faces, verdict: best stage-3 neuron s3.pool.m0.y0.x0: 81.0% held-out")
    assert "No high-level neuron beats the baselines" in text.splitlines()[0] + text.splitlines()[1]
    assert "chance (always 'not faces')" in text and "64.8" in text
    assert "best neuron of any stage (stage 1: s1.filter.m6.y0.x12)" in text


def test_green_only_past_both_baselines():
    assert _cell(0.873, [0.88, 0.915], ours=True) == "87.3"  # the stage-1 unit: not green
    assert _cell(0.93, [0.88, 0.915], ours=True) == "[green]93.0[/green]"
    assert _cell(0.93, [0.88, 0.915], ours=False) == "93.0"  # a baseline's own row
    assert _cell(0.93, [0.88, None], ours=True) == "93.0"  # a baseline not measured: nothing to beat shown
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    print_table([result()], console)
    styled = console.export_text(styles=True)
    assert "\x1b[32m87.3" not in styled and "87.3" in styled
