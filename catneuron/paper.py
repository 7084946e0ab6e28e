"""The paper's Table 1 (Le et al. 2012), in percent: every table and report shows a concept beside these."""

from __future__ import annotations

PAPER: dict[str, dict[str, float]] = {
    "faces": {"random_guess": 64.8, "linear_filter": 74.0, "best_first_stage": 71.0, "best_neuron": 81.7,
              "no_lcn": 78.5, "no_faces": 72.5},
    "human bodies": {"random_guess": 64.8, "linear_filter": 68.1, "best_neuron": 76.7},
    "cat faces": {"random_guess": 64.8, "linear_filter": 67.2, "best_neuron": 74.8},
}

ALIASES = {
    "face": "faces", "faces": "faces", "human faces": "faces", "lfw": "faces",
    "body": "human bodies", "bodies": "human bodies", "human body": "human bodies", "human bodies": "human bodies",
    "cat": "cat faces", "cats": "cat faces", "cat face": "cat faces", "cat faces": "cat faces",
}


def paper_concept(name: str) -> str | None:
    """The paper's concept a run's concept name stands for ('face', 'Cats', 'human_bodies'...), if any."""
    return ALIASES.get(" ".join(name.lower().replace("_", " ").replace("-", " ").split()))
