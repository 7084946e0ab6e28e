"""A model-parallel replica across two nodes: seconds per step against halo bytes, at link latencies 0, 1, 5 ms.

One `catneuron train --address HEAD --preset tiny --data embedded --replicas 1 --partitions 1x2` on the
three-node cluster of tests/ray_cluster.py (1 CPU a node, so Ray's placement group puts the two ranks on two
nodes: read back from Ray's actor table), each node's gloo on its own address. Per latency: the steady seconds
per step (past the first `warmup` of the steps), the halo bytes a rank receives per step (from the geometry:
benchmarks/model_parallel.py, which checks it against the bytes counted at the receives), and Downpour's bytes
per image (fetches and pushes to the shards).

The latency comes from the cluster's wire (`cluster.wire.latency(ms, rate)`, tests/wire.py, the user-space relay
that stands in for the netem this kernel lacks). Where no wire can be made (no nft or cgroup v2), only 0 ms is
measured, and the rows say so.

    python benchmarks/cluster_blocks.py [--steps 300] [--json docs/cluster-blocks.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

from downpour import steady  # noqa: E402
from machine import uptime  # noqa: E402
from model_parallel import geometry_row  # noqa: E402
from ray_cluster import Cluster  # noqa: E402

from catneuron.model.config import PRESETS  # noqa: E402
from catneuron.store import runs  # noqa: E402
from catneuron.store.rates import processor_name  # noqa: E402

ENTRY = "from catneuron.cli import main; main()"
LATENCIES_MS = (0, 1, 5)
GRID = (1, 2)

# The node of each rank of the latest run's replica, from Ray's actor table once the run is over.
RANKS = """
import json, logging, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)
nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
ranks = [(a["StartTime"], a["Name"], nodes.get(a["Address"]["NodeID"], "?"))
         for a in ray._private.state.actors().values() if "-rank-" in a["Name"]]
session = max(ranks)[1].split("-")[1]
print(json.dumps({name.rsplit("-", 1)[1]: ip for _, name, ip in ranks if name.split("-")[1] == session}))
"""


def latency(cluster: Cluster, ms: float):
    """The cluster's wire at `ms` one way (a context), or None where it has no relay to delay through (no nft or
    cgroup v2 here: `cluster.no_wire` says which)."""
    if cluster.wire is None or not cluster.relay:
        return contextlib.nullcontext() if ms == 0 else None
    return cluster.wire.latency(ms, None)


def one_run(cluster: Cluster, run: Path, steps: int, warmup: float) -> dict:
    """One replica of 1x2 blocks for `steps` steps: its steady rate and traffic, and where its ranks ran."""
    started = time.monotonic()
    done = cluster.run([sys.executable, "-c", ENTRY, "train", "--address", cluster.address, "--data", "embedded",
                        "--preset", "tiny", "--out", str(run), "--replicas", "1", "--partitions", "1x2",
                        "--steps", str(steps)], timeout=900)
    if done.returncode:
        raise RuntimeError(f"the run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = runs.read_metrics(run)
    batch = PRESETS["tiny"].train.batch_size
    row = {"wall_s": time.monotonic() - started, "steps": rows[-1]["step"]} | steady(rows, warmup, batch)
    row["s_per_step"] = batch / row["images_per_s"]
    placed = cluster.python(RANKS, cluster.address)
    row["rank_nodes"] = json.loads(placed.stdout.strip().splitlines()[-1]) if placed.returncode == 0 else {}
    return row


def rows(cluster: Cluster, folder: Path, steps: int = 300, warmup: float = 0.3,
         latencies: tuple[float, ...] = LATENCIES_MS) -> list[dict]:
    """The study on a running cluster: a row per latency (those the cluster's wire cannot give are marked)."""
    model = PRESETS["tiny"].model
    halo = geometry_row(model, GRID, PRESETS["tiny"].train.batch_size)["halo"]
    out = []
    for ms in latencies:
        row: dict = {"latency_ms": ms, "grid": "1x2", "halo_bytes_per_step": halo}
        wire = latency(cluster, ms)
        if wire is None:
            out.append(row | {"skipped": "no wire with a relay in this harness"})
            continue
        with wire:
            row |= one_run(cluster, folder / f"blocks-{ms:g}ms", steps, warmup)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=float, default=0.3, help="fraction of each run's steps left out")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = uptime()
    print(f"{processor_name()}; {start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cn-blocks-bench-") as tmp, Cluster(workers=2, cpus=1,
                                                                                relay=True) as cluster:
        table = rows(cluster, Path(tmp), args.steps, args.warmup)
    print("\n| link latency | ranks on | s / step | halo bytes / step (a rank) | Downpour bytes / image |\n"
          "|---|---|---|---|---|")
    for r in table:
        if "skipped" in r:
            print(f"| {r['latency_ms']:g} ms | not run: {r['skipped']} | | {r['halo_bytes_per_step']:,} | |")
            continue
        nodes = ", ".join(f"rank {k}: {v}" for k, v in sorted(r["rank_nodes"].items()))
        print(f"| {r['latency_ms']:g} ms | {nodes} | {r['s_per_step']:.4f} | {r['halo_bytes_per_step']:,} | "
              f"{r['bytes_per_image']:,.0f} |")
    end = uptime()
    print(f"\n{processor_name()}; start: {start}; end: {end}")
    if args.json:
        args.json.write_text(json.dumps({"processor": processor_name(), "uptime_at_start": start,
                                         "uptime_at_end": end, "rows": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
