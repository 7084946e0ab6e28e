"""The null and the ceiling added to an `evaluate` result, and the sentence they add to its verdict."""

from __future__ import annotations

import numpy as np

from catneuron.analysis.null import null_distribution, random_network
from catneuron.analysis.probe import probes
from catneuron.data.labelled import LabelledImages
from catneuron.model.network import Network


def add_controls(result: dict, network: Network, test: LabelledImages, null_seeds: int = 0, probe: bool = False,
                 seed: int = 0) -> dict:
    """Add `null` (S random-weights networks) and `probe` (per-stage logistic regressions) to `result`, and
    extend its verdict text with what they show."""
    labels = test.labels.astype(np.int64)
    device = next(network.parameters()).device
    if null_seeds:
        trained = [r["heldout_accuracy"] for r in result["best_by_stage"]]
        result["null"] = null_distribution(network.config, test.images, labels, null_seeds, trained, seed, device)
    if probe:
        result["probe"] = probes(network, random_network(network.config, seed + 1, device), test.images, labels, seed)
    sentence = controls_text(result)
    if sentence and isinstance(result.get("verdict"), dict):
        result["verdict"]["controls_text"] = sentence
        result["verdict"]["text"] = f"{result['verdict']['text']} {sentence}"
    return result


def verdict_stage(result: dict) -> int:
    """The stage the verdict is about: its upper neuron's (the last stage if the verdict names none)."""
    upper = result.get("verdict", {}).get("upper_neuron")
    stages = [r["stage"] for r in result["best_by_stage"] if r["id"] == upper]
    return stages[0] if stages else result["best_by_stage"][-1]["stage"]


def controls_text(result: dict) -> str:
    """E.g. "The best stage-3 unit is 1.2 sd above the best of 5 random networks (beats their maximum); the
    stage-3 probe reaches 86.0% trained against 84.0% random." Empty without controls."""
    stage = verdict_stage(result)
    parts = []
    if "null" in result:
        row = result["null"]["by_stage"][stage - 1]
        n = len(result["null"]["seeds"])
        above = row["sd_above_mean"]
        where = ("no different from" if above is None else
                 f"{abs(above):.1f} sd {'above' if above >= 0 else 'below'}")
        beats = "beats" if row["beats_max"] else "does not beat"
        parts.append(f"the best stage-{stage} unit is {where} the mean best of {n} random networks "
                     f"({100 * row['null']['mean']:.1f}% ± {100 * row['null']['sd']:.1f}) and {beats} their "
                     f"maximum ({100 * row['null']['max']:.1f}%)")
    if "probe" in result:
        row = result["probe"]["by_stage"][stage - 1]
        parts.append(f"the stage-{stage} probe (logistic regression on all its units) reaches "
                     f"{100 * row['trained']:.1f}% held-out trained against {100 * row['random_weights']:.1f}% random")
    if not parts:
        return ""
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
