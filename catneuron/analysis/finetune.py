"""Supervised use of the features (the paper's ImageNet experiment): one-vs-all logistic classifiers
on the top stage, trained first with the network frozen, then fine-tuned together with it.

No regularization, as in the paper. The features are standardized with the training set's mean and
standard deviation (fixed buffers of the classifier, measured once before phase 1): an affine change
of variables that leaves the model class unchanged but lets the same learning rates suit any network.
`from_scratch` runs the same model and schedule from random weights: the paper's "without
pretraining" arm. Both arms see the same split, epochs, batches and learning rates.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catneuron.analysis.features import as_float, batched_features, top_features
from catneuron.data.labelled import LabelledSet, read_labelled, split
from catneuron.errors import UserError
from catneuron.model.config import Config, to_dict
from catneuron.model.network import Network
from catneuron.progress import Progress
from catneuron.store import checkpoint, files, runs

RESULTS = "finetune.json"
PREFIX = "classifier."


@dataclass(frozen=True)
class Schedule:
    """The training budget of one arm: `epochs` over the training set in each phase.

    Adam with a learning rate per phase: `lr` for phase 1, a convex problem on standardized features
    that Adam's usual 1e-3 leaves far from its optimum in ten epochs (on CIFAR-10 the phase-1 loss was
    still 5.5, where the biases alone reach 3.25); `finetune_lr` for everything in phase 2, where 1e-2
    on the classifiers memorized the training half sooner and scored lower on validation.
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-2
    finetune_lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--lr", self.lr),
                            ("--finetune-lr", self.finetune_lr)):
            if value <= 0:
                raise UserError(f"{flag} {value}: must be positive")


class Classifier(nn.Module):
    """One logistic unit per class (one-vs-all) on standardized top-stage features."""

    def __init__(self, mean: Tensor, std: Tensor, classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.linear = nn.Linear(mean.numel(), classes)

    mean: Tensor
    std: Tensor

    @classmethod
    def fitted_to(cls, features: Tensor, classes: int) -> Classifier:
        return cls(features.mean(0), features.std(0).clamp_min(1e-6), classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)


def one_vs_all_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Sum over classes of each unit's logistic loss (its class against the rest), mean over the batch."""
    targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(labels)


def top_k(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of images whose class is among the k highest scores."""
    best = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((best == labels[:, None]).any(dim=1).float().mean())


def scores(logits: Tensor, labels: Tensor) -> dict[str, float | None]:
    """top1, and top5 where there are more than 5 classes (else None: it would be trivially high)."""
    return {"top1": top_k(logits, labels, 1), "top5": top_k(logits, labels, 5) if logits.shape[1] > 5 else None}


def batches(n: int, schedule: Schedule, phase: int, epoch: int) -> list[np.ndarray]:
    """The minibatches of one epoch: a seeded permutation, the same for both arms of a comparison."""
    order = np.random.default_rng([schedule.seed, 4, phase, epoch]).permutation(n)
    return [order[i:i + schedule.batch_size] for i in range(0, n, schedule.batch_size)]


def train_frozen(network: Network, train: LabelledSet, val: LabelledSet, schedule: Schedule,
                 device: str | torch.device = "cpu") -> tuple[Classifier, dict, list[dict]]:
    """Phase 1: the classifiers alone, on features computed once (the network is a fixed function here).

    Returns the classifier, its validation scores, and per-epoch history rows.
    """
    y_train, y_val = torch.from_numpy(train.labels), torch.from_numpy(val.labels)
    f_train = batched_features(network, train.images, device=device)
    f_val = batched_features(network, val.images, device=device)
    head = Classifier.fitted_to(f_train, len(train.classes))
    optimizer = torch.optim.Adam(head.parameters(), lr=schedule.lr)
    history = []
    for epoch in range(1, schedule.epochs + 1):
        losses, hits = [], []
        for index in batches(len(train), schedule, 1, epoch):
            logits = head(f_train[index])
            loss = one_vs_all_loss(logits, y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            hits.append(top_k(logits.detach(), y_train[index], 1))
        with torch.no_grad():
            val_top1 = top_k(head(f_val), y_val, 1)
        history.append({"phase": 1, "epoch": epoch, "loss": float(np.mean(losses)),
                        "train_top1": float(np.mean(hits)), "val_top1": val_top1})
    with torch.no_grad():
        return head, scores(head(f_val), y_val), history


def train_jointly(network: Network, head: Classifier, train: LabelledSet, val: LabelledSet, schedule: Schedule,
                  device: str | torch.device = "cpu", progress: bool = True) -> tuple[dict, list[dict]]:
    """Phase 2: classifiers and every stage together, gradients through all stages (no detaching).

    Updates `network` and `head` in place; returns the validation scores and per-epoch history rows.
    """
    y_train, y_val = torch.from_numpy(train.labels), torch.from_numpy(val.labels)
    head.to(device)
    optimizer = torch.optim.Adam([*network.parameters(), *head.parameters()], lr=schedule.finetune_lr)
    total = schedule.epochs * len(batches(len(train), schedule, 2, 1))
    bar = Progress(total, "fine-tune step", enabled=progress)
    start, step, history = time.monotonic(), 0, []
    for epoch in range(1, schedule.epochs + 1):
        network.train()
        losses, hits = [], []
        for index in batches(len(train), schedule, 2, epoch):
            labels = y_train[index].to(device)
            logits = head(top_features(network, as_float(train.images[index]).to(device)))
            loss = one_vs_all_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            network.normalize_weights()
            losses.append(float(loss.detach()))
            hits.append(top_k(logits.detach(), labels, 1))
            step += 1
            rate = step * schedule.batch_size / max(time.monotonic() - start, 1e-9)
            bar.update(step, rate, "img", {"epoch": epoch, "loss": losses[-1]},
                       eta=(total - step) * schedule.batch_size / rate, final=step == total)
        with torch.no_grad():
            val_logits = head(batched_features(network, val.images, device=device).to(device)).cpu()
        history.append({"phase": 2, "epoch": epoch, "loss": float(np.mean(losses)),
                        "train_top1": float(np.mean(hits)), "val_top1": top_k(val_logits, y_val, 1)})
    network.eval()
    head.cpu()
    return scores(val_logits, y_val), history


def finetune(network: Network, train: LabelledSet, val: LabelledSet, schedule: Schedule,
             device: str | torch.device = "cpu", progress: bool = True) -> tuple[Classifier, dict]:
    """Phase 1 (network frozen), then phase 2 (all weights); returns the classifier and the results.

    The network is modified in place by phase 2. Results: `frozen` and `finetuned` validation
    scores, and a `history` of per-epoch loss, running training top-1 and validation top-1.
    """
    network.to(device)
    head, frozen, history = train_frozen(network, train, val, schedule, device)
    finetuned, more = train_jointly(network, head, train, val, schedule, device, progress)
    return head, {"features": head.mean.numel(), "frozen": frozen, "finetuned": finetuned, "history": history + more}


def load_data(config: Config, train_dir: str | Path, val_dir: str | Path | None, fraction: float | None,
              seed: int) -> tuple[LabelledSet, LabelledSet]:
    """--train and --val, or --train cut by `split` (the paper's random half by default)."""
    size, channels = config.model.input_size, config.model.channels
    if val_dir is not None:
        if fraction is not None:
            raise UserError("--val and --split: give one (--split cuts --train when there is no --val)")
        train = read_labelled(train_dir, size, channels, "--train")
        return train, read_labelled(val_dir, size, channels, "--val", classes=train.classes)
    data = read_labelled(train_dir, size, channels, "--train", min_per_class=2)
    train_index, val_index = split(data.labels, 0.5 if fraction is None else fraction, seed)
    return data.subset(train_index), data.subset(val_index)


def source_network(run: str | Path, from_scratch: bool,
                   device: str | torch.device) -> tuple[Network, checkpoint.Checkpoint]:
    """The run's trained network, or the same model freshly initialized under its seed (as the trainer does)."""
    network, ckpt = runs.load_network(run, device)
    if from_scratch:
        torch.manual_seed(ckpt.config.train.seed)
        network = Network(ckpt.config.model).to(device)
        network.normalize_weights()
    return network, ckpt


def ensure_new(out: Path) -> None:
    """Never write over a run: the output of fine-tuning is a new run folder."""
    if runs.checkpoint_path(out).is_file():
        raise UserError(f"--out {out}: already holds a run (choose another --out)")


def finetune_run(run: str | Path, out: str | Path, train: LabelledSet, val: LabelledSet, schedule: Schedule,
                 from_scratch: bool = False, device: str | torch.device = "cpu", progress: bool = True,
                 sources: dict | None = None) -> dict:
    """Fine-tune a run's network into a new run folder `out`: checkpoint (with the classifier) and results.

    `out` is a run folder like any other (evaluate, visualize and report accept it); the classifier
    travels in the checkpoint as extra tensors `classifier.*`, its class names in the metadata.
    """
    out = Path(out)
    ensure_new(out)
    network, ckpt = source_network(run, from_scratch, device)
    start = time.monotonic()
    head, results = finetune(network, train, val, schedule, device, progress)
    results = {"run": str(run), "init": "random" if from_scratch else "pretrained", "classes": train.classes,
               "n_train": len(train), "n_val": len(val), "schedule": asdict(schedule)} | (sources or {}) | results
    results["seconds"] = time.monotonic() - start
    meta = {"data": ckpt.extra.get("data", ""), "finetune": {k: results[k] for k in ("run", "init", "classes")}}
    out.mkdir(parents=True, exist_ok=True)
    files.write_json(out / runs.CONFIG, {"config": to_dict(ckpt.config), "data": meta["data"],
                                        "finetune": meta["finetune"]})
    checkpoint.save(runs.checkpoint_path(out), ckpt.config, 0 if from_scratch else ckpt.step, network,
                    extra=meta, extra_tensors={PREFIX + k: v for k, v in head.state_dict().items()})
    files.write_json(runs.results_dir(out) / RESULTS, results)
    return results


def load_classifier(run: str | Path) -> tuple[Classifier, list[str]]:
    """The classifier a fine-tuned run carries, and its class names in label order."""
    ckpt = checkpoint.load(runs.checkpoint_path(run))
    state = {k[len(PREFIX):]: v for k, v in ckpt.extra_tensors.items() if k.startswith(PREFIX)}
    if not state:
        raise UserError(f"{run}: not a fine-tuned run (its checkpoint holds no classifier)")
    head = Classifier(state["mean"], state["std"], state["linear.weight"].shape[0])
    head.load_state_dict(state)
    return head.eval(), ckpt.extra["finetune"]["classes"]
