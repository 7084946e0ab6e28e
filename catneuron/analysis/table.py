"""Table 1: our rows beside the paper's numbers (Le et al. 2012, accuracies in %)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from catneuron.paper import PAPER, paper_concept

ROWS = (("random_guess", "chance (majority class)"), ("random_weights", "same network, random weights"),
        ("linear_filter", "best linear filter"), ("best_first_stage", "best first-stage neuron"),
        ("best_neuron", "best neuron"))
BASELINES = ("random_weights", "linear_filter")  # what a neuron must beat, on the same protocol


def published(concept: str) -> dict[str, float]:
    """The paper's numbers for a concept name ('faces', 'cats', 'bodies'...), or none."""
    return PAPER.get(paper_concept(concept) or "", {})


def _label(result: dict, key: str, label: str) -> str:
    if key == "random_guess" and "chance" in result.get("baselines_detail", {}):
        return f"chance ({result['baselines_detail']['chance']['id']})"
    if key == "best_neuron":
        rec = result["best_neuron"]
        return f"best neuron of any stage (stage {rec['stage']}: {rec['id']})"
    return label


def table_rows(result: dict) -> list[tuple[str, float, float | None, float | None, float | None, bool]]:
    """(row label, accuracy, held-out accuracy, AUC, paper, whether it is a neuron of the trained network)."""
    paper = published(result["concept"])
    detail = result.get("baselines_detail", {})
    rows = []
    for key, label in ROWS:
        if key == "best_neuron":
            rec = result["best_neuron"]
            rows.append((_label(result, key, label), rec["accuracy"], result["heldout_accuracy"], rec["auc"],
                         paper.get(key), True))
            continue
        rec = detail.get(key, {})
        rows.append((_label(result, key, label), result["baselines"][key], rec.get("heldout_accuracy"),
                     rec.get("auc"), paper.get(key), key == "best_first_stage"))
    for rec in result["best_by_stage"]:
        rows.append((f"best stage-{rec['stage']} neuron ({rec['id']})", rec["accuracy"], rec.get("heldout_accuracy"),
                     rec["auc"], None, True))
    return rows


def _cell(value: float | None, bars: list[float | None], ours: bool) -> str:
    """A neuron's accuracy, green only where it beats every baseline on the same protocol."""
    if value is None:
        return ""
    text = f"{100 * value:.1f}"
    beats = ours and bars and None not in bars and all(bar is not None and value > bar for bar in bars)
    return f"[green]{text}[/green]" if beats else text


def print_table(results: list[dict], console: Console) -> None:
    """Per concept: the measured verdict first, then Table 1 with this run's and the paper's numbers, on the
    caller's console (the command's terminal, or a recording one)."""
    for result in results:
        if "verdict" in result:
            v = result["verdict"]
            colour = "green" if v["emerged"] else "yellow"
            console.print(f"[bold {colour}]{result['concept']}, verdict:[/bold {colour}] {v['text']}")
        detail = result.get("baselines_detail", {})
        full_bars = [result["baselines"].get(k) for k in BASELINES]
        held_bars = [detail.get(k, {}).get("heldout_accuracy") for k in BASELINES]
        table = Table(title=f"Table 1, {result['concept']}: {result['n_positive']} positives, "
                            f"{result['n_negative']} negatives ({result['positive_fraction']:.1%} positive)")
        for name in ("", "accuracy %", "held-out %", "AUC", "paper %"):
            table.add_column(name, justify="left" if not name else "right")
        for label, acc, held, auc, paper, ours in table_rows(result):
            table.add_row(label, _cell(acc, full_bars, ours), _cell(held, held_bars, ours),
                          "" if auc is None else f"{auc:.3f}", "" if paper is None else f"{paper:.1f}")
        console.print(table)
        if "emergence" in result:
            console.print(result["emergence"]["text"])
    console.print("green: beats the random-weights network and the best linear filter on the same protocol. "
                  "held-out: unit and threshold chosen on one half of the test set, scored on the other. "
                  "The paper's best neuron is in the top layer of a network trained on 10M 200x200 frames "
                  "(1e9 parameters, 3 days on 16,000 cores).")


FULL_ROWS = (("random_guess", "random guess"), ("random_weights", "same network, random weights"),
             ("linear_filter", "best linear filter"), ("best_first_stage", "best first-stage neuron"),
             ("best_neuron", "best neuron"), ("heldout", "best neuron, held-out threshold"),
             ("no_lcn", "best neuron, no LCN"), ("sigmoid_ae", "deep autoencoder (sigmoid), best neuron"),
             ("kmeans", "K-means, best centroid"), ("no_faces", "trained without faces"))


def full_row_values(row: dict) -> dict[str, float]:
    """One concept's accuracies by Table 1 row key, from build_table's output."""
    main = row["network"]
    values = dict(main["baselines"]) | {"best_neuron": main["best_neuron"]["accuracy"],
                                        "heldout": main["heldout_accuracy"]}
    for key in ("no_lcn", "sigmoid_ae", "kmeans", "no_faces"):
        if key in row:
            values[key] = row[key]["accuracy"]
    return values


def print_full_table(summary: dict, console: Console) -> None:
    """Every row of Table 1 for every concept, beside the paper's numbers, on the caller's console."""
    concepts = summary["concepts"]
    table = Table(title=f"Table 1 ({summary['steps']} training steps per model)")
    table.add_column("")
    for concept in concepts:
        table.add_column(f"{concept} %", justify="right")
        table.add_column("paper %", justify="right")
    values = {c: full_row_values(row) for c, row in concepts.items()}
    for key, label in FULL_ROWS:
        cells = []
        for concept in concepts:
            ours, paper = values[concept].get(key), published(concept).get(key)
            cells += ["" if ours is None else f"{100 * ours:.1f}", "" if paper is None else f"{paper:.1f}"]
        table.add_row(label, *cells)
    console.print(table)
