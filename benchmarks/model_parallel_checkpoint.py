"""Model parallelism: each rank's peak memory while a checkpoint is written and while a run is resumed.

A model-parallel run of the paper's model never holds the whole model in one process: rank 0 writes the
checkpoint as the other ranks' rows arrive, a band of at most 64 MB at a time (catneuron.parallel.state,
catneuron.store.streamed), and a resumed rank reads only its rows. This measures it, with the trainer's own
code (`BlockTrainer`), on spawned ranks (gloo, loopback, one thread each unless --threads):

1. a fresh run: start (draw its initial blocks), one training step, then the checkpoint (`BlockTrainer.save`);
2. new processes resume it (`BlockTrainer(resume=True)`: rank 0 checks the file's checksum, every rank reads
   its rows) and train one more step.

Per rank and phase: the resident memory when the phase begins and its peak during the phase (VmHWM of
/proc/self/status, reset at each phase's start through /proc/self/clear_refs), so a phase's peak is its own
and not an earlier phase's.

    python benchmarks/model_parallel_checkpoint.py [--preset paper] [--grid 2x2] [--batch 100] [--threads 1]
                                                   [--out DIR]

Run it under `flock /tmp/catneuron-heavy.lock` on a shared machine: `paper` at 2x2 is 4 ranks of ~4 GB,
and its checkpoint 7.5 GB on disk (in a temporary folder under --out, removed at the end).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from model_parallel import _images, cpu_model, gb, load

from catneuron.model.config import PRESETS, replace
from catneuron.parallel.grid import parse_grid, plan
from catneuron.parallel.launch import run_ranks
from catneuron.parallel.trainer import BlockTrainer
from catneuron.store import runs

FRESH = ("start", "1 step", "checkpoint written")
RESUMED = ("resume (read its blocks)", "1 step")


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class Phases:
    """Resident memory at each phase's start and its peak during the phase, in bytes."""

    def __init__(self) -> None:
        self.rows: list[float] = []

    def begin(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS: the next peak is this phase's
        self.rows.append(_kb("VmRSS") * 1024.0)

    def end(self) -> None:
        self.rows.append(_kb("VmHWM") * 1024.0)


def _rank(rank: int, world: int, preset: str, grid: tuple[int, int], batch: int, run: str, resume: bool) -> list:
    """One rank of the fresh run (start, a step, the checkpoint) or of the resumed one (resume, a step);
    every rank's [start RSS, peak] per phase, on rank 0."""
    config = replace(PRESETS[preset], train={"batch_size": batch})
    phases = Phases()
    phases.begin()
    trainer = BlockTrainer(config, "embedded", run, grid, rank, resume=resume)
    phases.end()
    images = _images(config.model, batch)
    phases.begin()
    trainer.train_step(images)
    phases.end()
    if not resume:
        phases.begin()
        trainer.save()
        phases.end()
    stats = torch.tensor(phases.rows, dtype=torch.float64)
    every = [torch.empty_like(stats) for _ in range(world)]
    torch.distributed.all_gather(every, stats)
    return [row.tolist() for row in every] if rank == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--grid", default="2x2")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--out", default=tempfile.gettempdir(), help="where the temporary run folder goes")
    args = parser.parse_args()
    grid = parse_grid(args.grid)
    plan(PRESETS[args.preset].model, grid)
    world = grid[0] * grid[1]
    print(f"CPU: {cpu_model()}; load average at start {load()}")
    print(f"\n{args.preset} on {args.grid} blocks, batch {args.batch}, {args.threads} thread(s) per rank: resident "
          "memory per rank at each phase's start, and its peak during the phase")
    print("| rank | phase | at start | peak | peak - at start |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="catneuron-bench-", dir=args.out) as folder:
        run = os.path.join(folder, "run")
        for resume, names in ((False, FRESH), (True, RESUMED)):
            rows = run_ranks(_rank, world, (args.preset, grid, args.batch, run, resume), threads=args.threads)
            for rank, row in enumerate(rows):
                for k, name in enumerate(names):
                    start, peak = row[2 * k], row[2 * k + 1]
                    label = f"resumed: {name}" if resume else name
                    print(f"| {rank} | {label} | {gb(start)} | {gb(peak)} | {gb(peak - start)} |", flush=True)
            if not resume:
                size = runs.checkpoint_path(run).stat().st_size
                print(f"| | checkpoint file | | {gb(size)} | |", flush=True)
    print(f"load average at the end {load()}")


if __name__ == "__main__":
    main()
