"""Downpour over a three-node Ray cluster on this machine, with a wire: images/s and bytes per image at link
latencies of 0, 1, 5 and 20 ms and one bandwidth limit, for P = G = 1, 4 and 16 (fetch every P steps, push every
G). Does asynchrony hide the wire, as the paper argues?

The cluster is tests/ray_cluster.py's (a head on 127.0.0.2 and workers on .3 and .4, 1 CPU each, in a network
namespace of its own), with the relay of tests/wire.py in every inter-node TCP connection (the kernel has no
netem). Each run is `catneuron train --address HEAD --preset tiny --data embedded --replicas 3 --ps-shards 3`
(a replica and a shard a node, as far as Ray follows the hint) for `--minutes`; the rate is taken past the first
`--warmup` fraction of its steps. First, what the relay itself costs: a bulk transfer and small round trips
between two nodes' processes through it at 0 ms, against the same within one node (no relay).

    python benchmarks/cluster.py [--minutes 0.45] [--json docs/cluster-downpour.json] \
        [--figure docs/cluster-downpour.png]

Needs root (a network namespace, cgroups) and nft; 15 runs of --minutes each plus start-up: about 10 minutes
at the default (528 s measured).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE)]

from downpour import steady  # noqa: E402
from machine import uptime  # noqa: E402
from ray_cluster import Cluster  # noqa: E402

from catneuron.model import local_cpp  # noqa: E402
from catneuron.store import runs  # noqa: E402
from catneuron.store.rates import processor_name  # noqa: E402

ENTRY = "from catneuron.cli import main; main()"
LATENCIES_MS = (0, 1, 5, 20)
RATE = 3e6  # bytes/s per link and direction: the bandwidth point (24 Mb/s), at 0 ms
PG = (1, 4, 16)
BATCH = 20  # the tiny preset's

# Between two processes: bulk MB/s and the median of small round trips, in ms; the relay's CPU seconds.
PROBE = """
import json, os, socket, sys, time
host, mode = sys.argv[1], sys.argv[2]
if mode == "serve":
    server = socket.create_server((host, 9100))
    print("up", flush=True)
    c = server.accept()[0]
    while data := c.recv(1 << 16):
        if data.endswith(b"?"):
            c.sendall(b"!")
    sys.exit()
c = socket.create_connection((host, 9100))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
trips = []
for _ in range(200):
    start = time.perf_counter()
    c.sendall(b"?")
    c.recv(1)
    trips.append(time.perf_counter() - start)
block, total = b"x" * (1 << 16), 200 << 20
start = time.perf_counter()
for _ in range(total // len(block)):
    c.sendall(block)
c.sendall(b"?")
c.recv(1)
seconds = time.perf_counter() - start
print(json.dumps({"MB_per_s": total / seconds / 1e6, "round_trip_ms": sorted(trips)[100] * 1e3,
                  "seconds": seconds}))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_cost(cluster: Cluster) -> dict:
    """200 MB and 200 one-byte round trips from node 3 to a server on 127.0.0.4 (through the relay) and on
    127.0.0.3 (within the node: direct), and the relay's CPU seconds for the first."""
    out = {}
    relay_pid = cluster.wire.relay.pid
    for name, server_ip in (("direct (within a node)", "127.0.0.3"), ("through the relay (two nodes)", "127.0.0.4")):
        server = subprocess.Popen(cluster.on(server_ip, [sys.executable, "-c", PROBE, server_ip, "serve"]),
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "up"
        before = cpu_seconds(relay_pid)
        client = subprocess.run(cluster.on("127.0.0.3", [sys.executable, "-c", PROBE, server_ip, "client"]),
                                capture_output=True, text=True, timeout=300, check=True)
        server.wait(30)
        row = json.loads(client.stdout)
        row["relay_cpu_s_per_GB"] = (cpu_seconds(relay_pid) - before) / (200 << 20) * 1e9
        out[name] = row
        print(f"wire: {name}: {row['MB_per_s']:.0f} MB/s, round trip {row['round_trip_ms']:.3f} ms, "
              f"relay CPU {row['relay_cpu_s_per_GB']:.2f} s/GB", flush=True)
    return out


def train(cluster: Cluster, run: Path, pg: int, minutes: float, warmup: float) -> dict:
    """One Downpour run on the cluster; its steady rate and traffic from its metrics."""
    started = time.monotonic()
    done = cluster.run([sys.executable, "-c", ENTRY, "train", "--address", cluster.address, "--data", "embedded",
                        "--preset", "tiny", "--out", str(run), "--replicas", "3", "--ps-shards", "3",
                        "--fetch-every", str(pg), "--push-every", str(pg), "--steps", "100000000",
                        "--minutes", str(minutes),
                        "--set", "train.checkpoint_every=100000000"], timeout=minutes * 60 + 120)
    if done.returncode:
        raise RuntimeError(f"the run failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = runs.read_metrics(run)
    if not rows:
        raise RuntimeError(f"the run wrote no metrics:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return {"wall_s": time.monotonic() - started, "steps": rows[-1]["step"]} | steady(rows, warmup, BATCH)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, bytes_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for pg in PG:
        rows = [r for r in results["runs"] if r["P"] == pg and r["rate_MB_s"] is None]
        line = rate_ax.plot([r["latency_ms"] for r in rows], [r["images_per_s"] for r in rows], marker="o",
                            label=f"P = G = {pg}")[0]
        limited = next(r for r in results["runs"] if r["P"] == pg and r["rate_MB_s"] is not None)
        rate_ax.plot([0], [limited["images_per_s"]], marker="x", markersize=10, color=line.get_color(),
                     linestyle="none")
        bytes_ax.bar(str(pg), rows[0]["bytes_per_image"] / 1024, color=line.get_color())
    rate_ax.set_xscale("symlog", linthresh=1)
    rate_ax.set_xticks(LATENCIES_MS, [str(ms) for ms in LATENCIES_MS])
    rate_ax.set_xlabel("link latency, one way (ms)")
    rate_ax.set_ylabel("images/s (3 replicas)")
    rate_ax.set_title(f"x: {RATE / 1e6:g} MB/s per link, 0 ms", fontsize=9)
    rate_ax.set_ylim(bottom=0)
    rate_ax.legend()
    bytes_ax.set_xlabel("P = G")
    bytes_ax.set_ylabel("KB per image (fetched + pushed)")
    fig.suptitle(f"Downpour, tiny preset, 3 nodes x 1 CPU on one machine ({results['processor']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=0.45, help="each run's --minutes")
    parser.add_argument("--warmup", type=float, default=0.4, help="fraction of each run's steps left out")
    parser.add_argument("--json", type=Path, default=HERE.parent / "docs" / "cluster-downpour.json")
    parser.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "cluster-downpour.png")
    args = parser.parse_args()

    processor = processor_name()
    results: dict = {"processor": processor, "cores": os.cpu_count(), "minutes_per_run": args.minutes,
                     "uptime_at_start": uptime(), "runs": []}
    print(f"{processor}, {os.cpu_count()} cores; {results['uptime_at_start']}", flush=True)
    # The compiled CPU kernels from this machine's cache: the nodes' HOME is a fresh one (tests/conftest.py).
    os.environ.setdefault("CATNEURON_KERNEL_CACHE", str(local_cpp.cache_dir()))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cn-cluster-bench-") as tmp, Cluster(workers=2, cpus=1,
                                                                                 relay=True) as cluster:
        results["wire"] = relay_cost(cluster)
        settings = [(ms, None) for ms in LATENCIES_MS] + [(0, RATE)]
        for ms, rate in settings:
            with cluster.wire.latency(ms, rate):
                for pg in PG:
                    run = Path(tmp) / f"d{ms}-r{rate or 0:g}-p{pg}"
                    row = {"latency_ms": ms, "rate_MB_s": rate and rate / 1e6, "P": pg, "G": pg}
                    row |= train(cluster, run, pg, args.minutes, args.warmup)
                    results["runs"].append(row)
                    print(json.dumps(row), flush=True)
                    args.json.write_text(json.dumps(results, indent=2) + "\n")  # so far, should a run fail
    results["uptime_at_end"] = uptime()
    results["total_s"] = time.monotonic() - started
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    figure(results, args.figure)
    print("\n| link | P = G | images/s | KB/image | staleness mean |\n|---|---|---|---|---|")
    for r in results["runs"]:
        link = f"{r['latency_ms']} ms" + (f", {r['rate_MB_s']:g} MB/s" if r["rate_MB_s"] else "")
        print(f"| {link} | {r['P']} | {r['images_per_s']:.0f} | {r['bytes_per_image'] / 1024:.1f} | "
              f"{r['staleness_mean']:.2f} |")
    print(f"\n{processor}; start: {results['uptime_at_start']}; end: {results['uptime_at_end']}; "
          f"{results['total_s']:.0f} s in all; {args.json}, {args.figure}")


if __name__ == "__main__":
    main()
