"""Train one recipe on the real-data face split, score it, and append a results row (research issue 9).

    python experiments/run_face_experiment.py --config experiments/configs/NAME.yaml --steps 1500 \
        [--eval-at 200,500,1500] [--control] [--split /tmp/research/split] [--runs /tmp/research/runs]

`--split` is the folder `experiments/face_split.py` makes (train, train_nofaces, test_faces, test_other).
At each `--eval-at` step the trained network is scanned on the test set; the random-weights network of
the same config and the linear-filter baseline (every training image as a template, as `catneuron
evaluate` does) are scanned once. For every population the row gives the paper's number (best unit
and threshold on the whole test set) and the held-out one (unit and threshold chosen on one stratified
half, scored on the other, mean of both directions). The bar of the issue: a stage-2 or stage-3 unit's
held-out accuracy >= 3 points over both the random network's best unit (any stage) and the best linear
filter; the control (same recipe, corpus without faces) must not reach it. Rows go to
RUNS/../results.jsonl and are printed as a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from catneuron.analysis.activations import UnitIndex
from catneuron.analysis.baselines import chance, filter_blocks, image_rows
from catneuron.analysis.evaluate import block_size, scan_linear, scan_network
from catneuron.analysis.selectivity import Layout, Scored
from catneuron.data.images import read_folder
from catneuron.data.sources import ArraySource
from catneuron.model import config as configs
from catneuron.model.network import Network
from catneuron.train.trainer import Trainer

CACHE = Path("/tmp/research/cache")


def folder_images(folder: str, size: int, channels: int) -> np.ndarray:
    """A folder's images as uint8 (N, C, S, S), decoded once and cached under /tmp/research/cache."""
    key = CACHE / f"{str(Path(folder).resolve()).strip('/').replace('/', '_')}_{size}_{channels}.npy"
    if key.is_file():
        return np.load(key)
    images = read_folder(folder, size, channels).images
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(key, images)
    return images


def labelled_folders(positives: str, negatives: str, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = folder_images(positives, size, channels), folder_images(negatives, size, channels)
    images = np.concatenate([pos, neg]).astype(np.float32) / 255.0
    return images, np.array([1] * len(pos) + [0] * len(neg), dtype=np.int64)


def population_scores(scored: Scored, groups: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per group of units: best accuracy and AUC on the whole set, and the held-out accuracy."""
    out = {}
    for name, units in groups.items():
        best = scored.full.best(units)
        out[name] = {"unit": int(best), "accuracy": float(scored.full.accuracy[best]),
                     "auc": float(scored.full.auc[best]), "heldout": scored.heldout(units)[0]}
    return out


def network_scores(network: Network, images: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    index = UnitIndex(network)
    groups = {f"s{s}": index.units_of_stage(s) for s in range(1, len(network.stages) + 1)}
    groups["any"] = np.arange(len(index))
    groups["upper"] = np.concatenate([groups[f"s{s}"] for s in range(2, len(network.stages) + 1)])
    scores = population_scores(scan_network(network.eval(), images, Layout(labels), "network", True), groups)
    for s in scores.values():
        s["unit"] = str(index.neuron(s["unit"]))
    return scores


def baselines(cfg: configs.Config, split: Path, images: np.ndarray, labels: np.ndarray,
              train_images: np.ndarray) -> dict:
    torch.manual_seed(cfg.train.seed + 1)
    rand = network_scores(Network(cfg.model), images, labels)
    batch = torch.from_numpy(train_images.astype(np.float32) / 255.0)
    blocks = filter_blocks([batch], len(batch), block_size(len(labels)))
    leader, _ = scan_linear(blocks, image_rows(images), Layout(labels), len(batch), "linear", True)
    linear = leader.record("training image")
    linear = {"unit": int(linear["id"].split()[-1]), "accuracy": linear["accuracy"], "auc": linear["auc"],
              "heldout": linear["heldout_accuracy"]}
    return {"random_guess": chance(labels, "faces")["accuracy"], "random": rand, "linear": linear}


def row(name: str, step: int, batch: int, scores: dict, base: dict, control: dict | None) -> dict:
    bar = max(base["random"]["any"]["heldout"], base["linear"]["heldout"]) + 0.03
    upper = scores["upper"]["heldout"]
    return {"name": name, "step": step, "images_seen": step * batch, "scores": scores, "baselines": base,
            "control": control, "bar": bar, "upper_heldout": upper, "reached": bool(upper >= bar and (
                control is None or control["upper"]["heldout"] < bar))}


def markdown(r: dict) -> str:
    s, b, c = r["scores"], r["baselines"], r["control"]
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"
    stages = " / ".join(f"{pct(s[k]['heldout'])} ({s[k]['auc']:.2f})" for k in sorted(s) if k.startswith("s"))
    ctrl = f"{pct(c['upper']['heldout'])} ({c['upper']['auc']:.2f})" if c else "-"
    return (f"| {r['name']} | {r['images_seen'] // 1000}k | {pct(b['random_guess'])} | "
            f"{pct(b['random']['any']['heldout'])} ({b['random']['any']['auc']:.2f}) | "
            f"{pct(b['random']['upper']['heldout'])} | {pct(b['linear']['heldout'])} ({b['linear']['auc']:.2f}) | "
            f"{stages} | {pct(r['upper_heldout'])} | {s['upper']['unit']} | {ctrl} | "
            f"{'yes' if r['reached'] else 'no'} |")


HEADER = ("| run | images seen | guess | random weights, best any stage (AUC) | random, best stage 2/3 | "
          "linear filter (AUC) | trained s1 / s2 / s3 (AUC) | best stage 2/3 | its unit | control stage 2/3 (AUC) | "
          "bar reached |\n|" + "---|" * 11)


def print_table(log: Path) -> None:
    """Every row of a results.jsonl as the Markdown table docs/experiments.md shows (held-out accuracies)."""
    print(HEADER)
    for line in log.read_text().splitlines():
        print(markdown(json.loads(line)))


def train_and_score(cfg: configs.Config, data: Path, run: Path, eval_at: list[int], images: np.ndarray,
                    labels: np.ndarray, resume: bool = False) -> tuple[list[tuple[int, dict]], np.ndarray, float]:
    train_images = folder_images(str(data), cfg.model.input_size, cfg.model.channels)
    source = ArraySource(train_images, f"folder {data} ({len(train_images)} images)")
    trainer = Trainer.resume(run, source) if resume else Trainer(cfg, source, run, data_spec=str(data))
    eval_at = [s for s in eval_at if s > trainer.step]
    out, seconds = [], 0.0
    for step in eval_at:
        start = time.monotonic()
        trainer.fit(step, progress=False)
        seconds += time.monotonic() - start
        out.append((step, network_scores(trainer.network, images, labels)))
        print(f"  {run.name} step {step}: " + ", ".join(
            f"{k} {100 * v['heldout']:.1f}" for k, v in out[-1][1].items()), flush=True)
    return out, train_images, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=None, help="only print the rows of this results.jsonl")
    parser.add_argument("--config", help="YAML config (see experiments/configs/)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--eval-at", default="", help="comma-separated steps to score at (the last is --steps)")
    parser.add_argument("--control", action="store_true", help="also train on train_nofaces and score it")
    parser.add_argument("--split", type=Path, default=Path("/tmp/research/split"))
    parser.add_argument("--train", default="train", help="training folder inside --split")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/research/runs"))
    parser.add_argument("--name", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="continue the run RUNS/NAME from its checkpoint")
    args = parser.parse_args()
    if args.table:
        print_table(args.table)
        return
    if not args.config or not args.steps:
        parser.error("--config and --steps are required")
    torch.set_num_threads(1)  # 2 threads ran 20x slower on the shared, oversubscribed machine
    cfg = configs.load(args.config)
    if args.seed is not None:
        cfg = configs.replace(cfg, train={"seed": args.seed})
    name = args.name or Path(args.config).stem
    eval_at = sorted({int(s) for s in args.eval_at.split(",") if s} | {args.steps})
    images, labels = labelled_folders(str(args.split / "test_faces"), str(args.split / "test_other"),
                                      cfg.model.input_size, cfg.model.channels)
    run = args.runs / name
    if run.exists() and not args.resume:
        raise SystemExit(f"{run} exists: pick another --name")
    print(f"{name}: training on {args.split / args.train} to step {args.steps}", flush=True)
    trained, train_images, seconds = train_and_score(cfg, args.split / args.train, run, eval_at, images, labels,
                                                     args.resume)
    base = baselines(cfg, args.split, images, labels, train_images)
    control = None
    if args.control:
        ctrl, _, _ = train_and_score(cfg, args.split / "train_nofaces", args.runs / f"{name}-control", [args.steps],
                                     images, labels)
        control = ctrl[-1][1]
    log = args.runs.parent / "results.jsonl"
    with open(log, "a") as f:
        for step, scores in trained:
            r = row(name, step, cfg.train.batch_size, scores, base, control if step == args.steps else None)
            r |= {"config": configs.to_dict(cfg), "train": args.train, "train_seconds": seconds}
            f.write(json.dumps(r) + "\n")
            print(markdown(r))
    print(f"trained {seconds / 60:.1f} min; rows appended to {log}")


if __name__ == "__main__":
    main()
