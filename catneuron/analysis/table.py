"""Table 1: our rows beside the paper's numbers (Le et al. 2012, accuracies in %)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from catneuron.paper import PAPER, paper_concept

ROWS = (("random_guess", "random guess (all negative)"), ("random_weights", "same network, random weights"),
        ("linear_filter", "best linear filter"), ("best_first_stage", "best first-stage neuron"),
        ("best_neuron", "best neuron (any stage)"))


def published(concept: str) -> dict[str, float]:
    """The paper's numbers for a concept name ('faces', 'cats', 'bodies'...), or none."""
    return PAPER.get(paper_concept(concept) or "", {})


def table_rows(result: dict) -> list[tuple[str, float, float | None, float | None, float | None]]:
    """(row label, accuracy, held-out accuracy, AUC, paper) for one concept's results."""
    paper = published(result["concept"])
    detail = result.get("baselines_detail", {})
    rows = []
    for key, label in ROWS:
        if key == "best_neuron":
            rec = result["best_neuron"]
            rows.append((label, rec["accuracy"], result["heldout_accuracy"], rec["auc"], paper.get(key)))
            continue
        rec = detail.get(key, {})
        rows.append((label, result["baselines"][key], rec.get("heldout_accuracy"), rec.get("auc"), paper.get(key)))
    for rec in result["best_by_stage"]:
        rows.append((f"best stage-{rec['stage']} neuron ({rec['id']})", rec["accuracy"], rec.get("heldout_accuracy"),
                     rec["auc"], None))
    return rows


def print_table(results: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    for result in results:
        table = Table(title=f"Table 1, {result['concept']}: {result['n_positive']} positives, "
                            f"{result['n_negative']} negatives ({result['positive_fraction']:.1%} positive)")
        for name in ("", "accuracy %", "held-out %", "AUC", "paper %"):
            table.add_column(name, justify="left" if not name else "right")
        for label, acc, held, auc, paper in table_rows(result):
            table.add_row(label, f"{100 * acc:.1f}", "" if held is None else f"{100 * held:.1f}",
                          "" if auc is None else f"{auc:.3f}", "" if paper is None else f"{paper:.1f}")
        console.print(table)
        if "verdict" in result:
            console.print(result["verdict"]["text"])
        if "emergence" in result:
            console.print(result["emergence"]["text"])
    console.print("held-out: unit and threshold chosen on one half of the test set, scored on the other. "
                  "The paper's numbers come from 10M 200x200 frames, 1e9 parameters and 3 days on 16,000 cores.")


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


def print_full_table(summary: dict, console: Console | None = None) -> None:
    console = console or Console()
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
