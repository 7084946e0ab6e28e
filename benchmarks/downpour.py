"""Downpour SGD on one machine: images/s against the single-process trainer, traffic per image, staleness.

Trains the `small` preset on the embedded corpus: first the single-process trainer (all cores, and one
thread, since on a busy machine OpenMP threads that wait for each other can cost more than they give), then,
on one local Ray, Downpour with N = 1 and N = 2 replicas (the cores split between them: each replica
gets cores / N torch threads) and one shard at P = G = 1, then N = 2 over a grid of P and G. Rates are
steady-state (the first `--warmup` fraction of each run, with actor start-up, is left out).

    python benchmarks/downpour.py [--steps 150] [--grid 1,1 4,1 1,4 4,4] [--json FILE]

On one machine, replicas share the cores the single process had, so Downpour can only lose here (the
parameter traffic and the shard's updates come on top of the same arithmetic); what the numbers give
is the overhead per step and the bytes per image, which is what decides scaling on a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from catneuron.data.embedded import EmbeddedCorpus
from catneuron.downpour.driver import Downpour, DownpourOptions
from catneuron.downpour.ray_env import local_ray
from catneuron.model.config import PRESETS, replace
from catneuron.model.network import Network
from catneuron.store import runs
from catneuron.train.trainer import Trainer


def steady(rows: list[dict], warmup: float, batch: int) -> dict:
    """Images/s between the first logged row past the warm-up and the last row, and the staleness seen."""
    start = next(r for r in rows if r["step"] >= warmup * rows[-1]["step"])
    rate = (rows[-1]["step"] - start["step"]) * batch / max(rows[-1]["elapsed_s"] - start["elapsed_s"], 1e-9)
    out = {"images_per_s": rate}
    if "bytes_per_image" in rows[-1]:
        out |= {"bytes_per_image": rows[-1]["bytes_per_image"],
                "staleness_mean": float(np.mean([r["staleness_mean"] for r in rows])),
                "staleness_max": max(r["staleness_max"] for r in rows),
                "replica_steps_per_s": rows[-1]["replica_steps_per_s"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--grid", nargs="*", default=["1,1", "4,1", "1,4", "4,4"], help="P,G pairs for N = 2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    config = replace(PRESETS["small"], train={"log_every": 1, "checkpoint_every": 10**9})
    corpus = EmbeddedCorpus(size=config.model.input_size)
    params = sum(p.numel() for p in Network(config.model).parameters())
    batch = config.train.batch_size
    results: dict = {"cores": cores, "load_average_at_start": os.getloadavg(), "parameters": params,
                     "batch": batch, "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="cn-downpour-bench-") as tmp:
        results["single_process"] = []
        for threads in sorted({cores, 1}, reverse=True):
            torch.set_num_threads(threads)
            single = Trainer(config, corpus, Path(tmp) / f"single-{threads}")
            single.fit(args.steps, progress=False)
            row = {"threads": threads} | steady(runs.read_metrics(single.run), args.warmup, batch)
            results["single_process"].append(row)
            print("single process", json.dumps(row), flush=True)
        with local_ray(num_cpus=cores):
            runs_ = [(n, 1, 1) for n in (1, 2)] + [(2, *map(int, pg.split(","))) for pg in args.grid if pg != "1,1"]
            results["downpour"] = []
            for n, p, g in runs_:
                run = Path(tmp) / f"n{n}-p{p}-g{g}"
                started = time.monotonic()
                Downpour(Trainer(config, corpus, run), DownpourOptions(replicas=n, fetch_every=p, push_every=g)
                         ).fit(args.steps, progress=False)
                row = {"replicas": n, "fetch_every": p, "push_every": g, "threads_per_replica": max(1, cores // n),
                       "wall_s": time.monotonic() - started} | steady(runs.read_metrics(run), args.warmup, batch)
                results["downpour"].append(row)
                print(json.dumps(row), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
