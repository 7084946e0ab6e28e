"""Issue 13's done-when check on any device: `catneuron train --partitions 1x2` logs the objectives of
`--partitions 1x1` within 1e-3 relative at every logged step (float32 sums in another order drift; the float64
tests of tests/parallel/ are the exact check).

    python benchmarks/partitions_match.py --device cuda [--preset small --steps 200]

With `--device cuda` the 1x2 run's two ranks take a GPU each and talk NCCL (two GPUs must be visible:
benchmarks/gpu_check.sh runs it where they are), and 1x1 is the single-process trainer on one GPU; with
`--device cpu`, gloo. Prints both runs' objectives at every logged step, the largest relative difference, and
each run's images/s with their ratio (measured in this run); exits 1 if the difference is over the tolerance
or a run fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catneuron.store import runs

TOLERANCE = 1e-3


def train(grid: str, args: argparse.Namespace, out: Path) -> tuple[dict[int, dict], float]:
    """One run's logged rows by step, and its wall time (process start included)."""
    command = [sys.executable, "-c", "from catneuron.cli import main; main()", "train", "--data", "embedded",
               "--preset", args.preset, "--steps", str(args.steps), "--partitions", grid, "--device", args.device,
               "--out", str(out)]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"--partitions {grid} failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return {row["step"]: row for row in runs.read_metrics(out)}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (1x2: a GPU per rank, NCCL) or cpu (gloo)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="catneuron-partitions-") as folder:
        one, one_s = train("1x1", args, Path(folder) / "1x1")
        two, two_s = train("1x2", args, Path(folder) / "1x2")
    steps = sorted(one.keys() & two.keys())
    if not steps or steps[-1] != args.steps:
        sys.exit(f"the runs logged different steps: 1x1 {sorted(one)}, 1x2 {sorted(two)}")
    print(f"{args.preset}, {args.steps} steps, --device {args.device}")
    print("| step | 1x1 objective | 1x2 objective | relative difference |")
    print("|---|---|---|---|")
    worst = 0.0
    for step in steps:
        a, b = one[step]["loss"], two[step]["loss"]
        diff = abs(a - b) / abs(a)
        worst = max(worst, diff)
        print(f"| {step} | {a:.6f} | {b:.6f} | {diff:.2e} |")
    rate_one, rate_two = one[steps[-1]]["images_per_s"], two[steps[-1]]["images_per_s"]
    print(f"images/s: 1x1 {rate_one:.1f}, 1x2 {rate_two:.1f} (1x2 / 1x1 = {rate_two / rate_one:.2f}); wall time "
          f"with start-up: 1x1 {one_s:.1f} s, 1x2 {two_s:.1f} s")
    verdict = "within" if worst <= TOLERANCE else "OVER"
    print(f"largest relative difference over {len(steps)} logged steps: {worst:.2e} ({verdict} {TOLERANCE:g})")
    if worst > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
