"""Downpour on a real Ray cluster on this machine: a head on 127.0.0.2 and workers on 127.0.0.3 and .4, each its own
`ray start`, in a network namespace of the test's own (tests/ray_cluster.py), the driver joining with `--address`
as a user would (`catneuron train`). Where the actors sit is read from Ray's actor table, not assumed.

One cluster serves the module (starting three nodes costs half a minute on two loaded cores); each test starts
on the head and two live workers (`whole`: the nodes a test killed or cut off are made up for on new addresses).
The cluster's nodes have 1 CPU each.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")

from conftest import missing_tool  # noqa: E402
from ray_cluster import HEAD_IP, Cluster, Sockets, Unavailable, gloo_on_the_nodes  # noqa: E402

from catneuron.data.embedded import EmbeddedCorpus  # noqa: E402
from catneuron.data.sources import open_source  # noqa: E402
from catneuron.model.config import PRESETS  # noqa: E402
from catneuron.model.network import Network  # noqa: E402
from catneuron.store import checkpoint, runs  # noqa: E402
from catneuron.train.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.slow
ENTRY = "from catneuron.cli import main; main()"
HEAD_LOST = 30  # seconds from the head's death to the driver's exit (HEAD_GRACE 10 s, and the load)
# What Ray prints when it prints: `(raylet) ...`, `(pid=123) ...`, `(ParameterShard pid=123, ip=...) ...`, its
# log lines (`2026-12-07 19:24:52,529 INFO ...`, `[2026-...] [...] ...`) and its warnings.
RAY_LINE = re.compile(r"^\s*(\x1b\[[0-9;]*m)?\((raylet|pid=|\w+ pid=)|^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\[state-dump\]|"
                      r"Ray deduplicates|ray\._private|RayActorError|core_worker|gcs_")


@pytest.fixture(scope="module")
def cluster():
    try:
        with Cluster(workers=2, cpus=1) as running:
            yield running
    except Unavailable as e:
        pytest.skip(f"no network namespace can be made here: {e}")


@pytest.fixture(autouse=True)
def whole(cluster) -> None:
    """Each test starts on the head and two live workers: nodes a test lost are made up for on new addresses."""
    cluster.top_up()


@pytest.fixture(scope="module")
def fixed() -> torch.Tensor:
    return next(EmbeddedCorpus(size=16).batches(200, seed=99))


def objective(network: Network, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(network.loss(network(images)))


def initial_objective(images: torch.Tensor, folder: Path) -> float:
    """The objective of the network `catneuron train --preset tiny` starts from."""
    return objective(Trainer(PRESETS["tiny"], EmbeddedCorpus(size=16), folder).network, images)


def train(cluster: Cluster, run: Path, *args: str) -> subprocess.Popen:
    """`catneuron train --address HEAD` on the head's machine (in the namespace), output merged."""
    return cluster.popen([sys.executable, "-c", ENTRY, "train", "--address", cluster.address, "--data", "embedded",
                          "--preset", "tiny", "--out", str(run), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        pytest.fail("the run did not end:\n" + process.communicate()[0][-3000:])
    return output


def ray_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if RAY_LINE.search(line)]


def wait_for(condition, seconds: float, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"the run ended waiting for {what}:\n{process.communicate()[0][-3000:]}")
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    pytest.fail(f"no {what} in {seconds:g} s:\n{process.communicate()[0][-3000:]}")


def metrics(run: Path) -> list[dict]:
    return runs.read_metrics(run) if (run / runs.METRICS).is_file() else []


def actors(cluster: Cluster, kind: str) -> dict[str, str]:
    """Live catneuron actors of `kind` ("replica", "ps") -> their node's address, from Ray's actor table."""
    return {name: ip for name, ip in cluster.placement("catneuron-").items() if f"-{kind}-" in name}


def test_a_client_without_the_token_is_refused_across_nodes(cluster):
    """From the node addresses' namespace: no token, or a wrong one, and the head refuses; the token admits, and
    the work it submits runs on the other nodes too."""
    code = ("import logging, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False, logging_level=40); "
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On; "
            "f = ray.remote(num_cpus=1)(lambda: ray.util.get_node_ip_address()); "
            "print('answer', sorted(ray.get([f.options(scheduling_strategy=On(n['NodeID'], soft=False)).remote() "
            "for n in ray.nodes() if n['Alive']])))")
    argv = [sys.executable, "-c", code, cluster.address]
    quick = {"RAY_gcs_server_port_wait_time_s": "2"}
    refused = cluster.run(argv, env=quick | {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""}, timeout=120)
    assert refused.returncode != 0 and "answer" not in refused.stdout
    assert "Authentication token is missing or incorrect" in refused.stderr
    wrong = cluster.run(argv, env=quick | {"RAY_AUTH_TOKEN": "0" * 64}, timeout=120)
    assert wrong.returncode != 0 and "Authentication token is missing or incorrect" in wrong.stderr
    admitted = cluster.run(argv, timeout=120)
    assert admitted.returncode == 0, admitted.stderr[-2000:]
    assert "answer ['127.0.0.2', '127.0.0.3', '127.0.0.4']" in admitted.stdout


def test_a_worker_node_dies_its_replica_waits_for_room_and_its_shard_comes_back(cluster, fixed, tmp_path):
    """Three replicas fill the three 1-CPU nodes (one each, from Ray's actor table), three shards; a worker node
    is killed (every process of it, by pid): its replica's replacement cannot be placed and says so once,
    counted in the metrics; its shard comes back on a surviving node from its snapshot, and the run says how many
    pushes it lost; a new node joins, the replacement lands there and steps; the run completes (its time limit)
    with no line of Ray's in its output, and its checkpoint has learnt."""
    run = tmp_path / "run"
    # Shards snapshot every 5 minutes (the default): the one a lost shard comes back from is its first, so it has
    # certainly lost pushes.
    process = train(cluster, run, "--replicas", "3", "--ps-shards", "3", "--steps", "1000000", "--minutes", "1.5")
    wait_for(lambda: len(metrics(run)[-1:]) and len(metrics(run)[-1]["replica_steps_per_s"]) == 3, 120,
             "three replicas stepping", process)
    replicas, shards = actors(cluster, "replica"), actors(cluster, "ps")
    assert sorted(replicas.values()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"], replicas
    # The driver asks for the shards one a node, softly (so Ray can restart them elsewhere); Ray 2.60 takes a soft
    # node affinity as a hint it often ignores: the node to lose is a worker holding a replica and a shard.
    lost_node = next((ip for ip in ("127.0.0.3", "127.0.0.4") if ip in shards.values()), None)
    assert lost_node, f"Ray put every shard on the head: {shards}"
    index = next(int(name.split("-replica-")[1].split("-")[0]) for name, ip in replicas.items() if ip == lost_node)
    shard = int(next(name for name, ip in shards.items() if ip == lost_node).split("-ps-")[1].split("-")[0])
    before = metrics(run)[-1]["step"]
    assert cluster.kill_node(lost_node)
    waiting = wait_for(lambda: [r for r in metrics(run) if r["step"] > before and r["replicas_waiting"] == 1], 90,
                       "a replacement counted as waiting", process)
    assert waiting[-1]["replicas"] == 2 and str(index) not in waiting[-1]["replica_steps_per_s"]
    joined = cluster.next_ip()
    cluster.start_node(joined)
    back = wait_for(lambda: [r for r in metrics(run) if r["step"] > waiting[-1]["step"]
                             and r["replicas_waiting"] == 0 and str(index) in r["replica_steps_per_s"]], 120,
                    "the replacement stepping", process)
    output = finish(process, 180)
    assert process.returncode == 0, output[-3000:]
    lines = output.splitlines()
    assert back[-1]["replicas"] == 3 and back[-1]["shard_pushes_lost"] > 0, output[-3000:]
    assert sum(f"replica {index} died" in line for line in lines) == 1, output[-3000:]
    assert sum(f"replica {index} waits to be placed" in line and "1 CPU free" in line for line in lines) == 1
    assert sum(re.search(rf"replica {index} runs on {joined} after waiting \d+ s", line) is not None
               for line in lines) == 1, output[-3000:]
    assert sum(re.search(rf"replica {index} steps again on {joined}, \d+ s after it was lost", line) is not None
               for line in lines) == 1, output[-3000:]
    lost = [line for line in lines if re.search(rf"parameter shard {shard} restarted on 127.0.0.[2-4] from its "
                                                r"snapshot at version 0: the [1-9]\d* push\(es\) it had applied "
                                                r"since are lost", line)]
    assert len(lost) == 1, output[-3000:]
    assert not ray_lines(output), ray_lines(output)
    assert (run / "ray.log").read_text().startswith("Ray's logs: /tmp/cnray-")
    assert "marked dead" in (run / "ray.log").read_text()  # what Ray said went there, not to the terminal
    network, _ = runs.load_network(run)
    assert objective(network, fixed) < 0.8 * initial_objective(fixed, tmp_path / "init")


RANKS = """
import json, logging, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)
nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
print(json.dumps({a["Name"]: [nodes.get(a["Address"]["NodeID"], "?"), a["Pid"]]
                  for a in ray._private.state.actors().values()
                  if a["State"] == sys.argv[2] and "-rank-" in a["Name"]}))
"""


def ranks(cluster: Cluster, state: str) -> dict[tuple[int, int], tuple[str, int]]:
    """The ranks of model-parallel replicas in `state`, from Ray's actor table: (incarnation, rank) -> (its node's
    address, its pid)."""
    out = cluster.python(RANKS, cluster.address, state)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1]).items()
    return {tuple(map(int, re.search(r"-(\d+)-rank-(\d+)$", name).groups())): (ip, pid) for name, (ip, pid) in found}


def sample_sockets(cluster: Cluster, process: subprocess.Popen) -> list[tuple[Sockets, Sockets]]:
    """The namespace's listening and established TCP sockets, snapshots every 0.2 s until `process` ends (filled
    in by a thread of its own)."""
    snapshots: list[tuple[Sockets, Sockets]] = []

    def sample() -> None:
        while process.poll() is None:
            with contextlib.suppress(subprocess.CalledProcessError):
                snapshots.append((cluster.namespace.sockets("listening"), cluster.namespace.sockets()))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    return snapshots


def command_line(pid: int) -> str:
    """A process's command line (a Ray worker's shows the actor it runs: `ray::BlockRank`), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def test_a_1x2_replica_spans_two_nodes_equals_one_process_and_is_replaced_when_a_node_dies(cluster, fixed, tmp_path):
    """`--replicas 1 --partitions 1x2` on 1-CPU nodes: no node holds both ranks, so Ray's placement group puts
    them on two nodes (from Ray's actor table); they meet at rank 0's TCP store on its node's address and talk
    gloo over the nodes' addresses (each node's GLOO_SOCKET_IFNAME names its own interface, as on real machines:
    `ss` in the namespace shows it); up to the kill the objectives equal the single-process trainer's within
    float32 rounding (the blocks sum them in another order). Then the worker node of one of its ranks is killed:
    the replica dies once, is rebuilt on the two nodes left, steps again, the run completes and its checkpoint has
    learnt."""
    run = tmp_path / "run"
    process = train(cluster, run, "--replicas", "1", "--partitions", "1x2", "--steps", "120")
    snapshots = sample_sockets(cluster, process)
    wait_for(lambda: metrics(run)[-1:] and metrics(run)[-1]["step"] >= 20, 120, "the ranks stepping", process)
    lost_node = next(node.ip for node in cluster.nodes if node.ip != cluster.head and any(
        "ray::BlockRank" in command_line(pid) for pid in node.pids()))  # Ray's table says more, slowly: below
    before = metrics(run)[-1]["step"]
    assert cluster.kill_node(lost_node)
    output = finish(process, 180)
    assert process.returncode == 0, output[-3000:]
    assert sum("replica 0 died" in line for line in output.splitlines()) == 1, output[-3000:]
    assert not ray_lines(output), ray_lines(output)
    assert metrics(run)[-1]["step"] == 120 and before < 100
    placed = ranks(cluster, "DEAD")  # the run is over: its actors are gone, Ray's table remembers them
    assert sorted(placed) == [(0, 0), (0, 1), (1, 0), (1, 1)], placed
    first, again = ({rank: placed[n, rank] for rank in (0, 1)} for n in (0, 1))
    assert first[0][0] != first[1][0] and lost_node in {first[0][0], first[1][0]}, placed  # spanning two nodes
    assert again[0][0] != again[1][0] and lost_node not in {again[0][0], again[1][0]}, placed  # the two left
    on_nodes = {pid: ip for ip, pid in first.values()}
    assert any(gloo_on_the_nodes(*snapshot, on_nodes, first[0][1]) for snapshot in snapshots), placed
    single = Trainer(PRESETS["tiny"], open_source("embedded", 16, 1), tmp_path / "single", data_spec="embedded")
    single.fit(before, progress=False)
    ours, theirs = ([r["loss"] for r in metrics(folder) if r["step"] <= before]
                    for folder in (run, tmp_path / "single"))
    assert len(ours) == before // 5 and ours == pytest.approx(theirs, rel=1e-3), (ours, theirs)
CUT_SECONDS = 30  # the partition
PLACED_WITHIN = 60  # seconds from the cut to the replacement alive on another node: past this, the run hangs
STOPS_WITHIN = 60  # seconds from SIGTERM to the driver's exit, the checkpoint written


def test_a_worker_node_cut_off_for_30_s_is_replaced_and_the_run_says_so(cluster, fixed, tmp_path):
    """Two replicas on three nodes; the worker node holding one is cut off from the others for 30 s (tests/wire.py:
    its inter-node packets dropped, both ways), then healed. Ray declares the node dead within seconds (the
    cluster's health checks), so the run does not ride it out: it says the replica died and was replaced, the
    replacement is alive on another node within PLACED_WITHIN s (Ray's actor table), the survivor steps on
    throughout and after the heal, the replacement steps again (said once, and seen in the metrics: issue 22's
    replacement that never did); the run stops on SIGTERM with no line of Ray's, and its checkpoint has learnt."""
    if cluster.wire is None:
        missing_tool(f"no wire between the nodes: {cluster.no_wire} (.ci/run installs nftables)")
    run = tmp_path / "run"
    process = train(cluster, run, "--replicas", "2", "--ps-shards", "2", "--steps", "1000000", "--minutes", "10")
    try:
        output, index, cut = cut_and_heal(cluster, run, process)
    finally:  # never a run left holding the cluster's CPUs for the next test
        if process.poll() is None:
            process.kill()
            process.communicate()
    cluster.kill_node(cut)  # declared dead, which Ray never takes back: its raylet exits anyway
    lines = output.splitlines()
    assert sum(re.search(rf"replica {index} died \(.*node.*\): replaced in 1 s", line) is not None
               for line in lines) == 1, output[-3000:]
    again = [line for line in lines if re.search(rf"replica {index} steps again on ", line)]
    assert len(again) == 1 and stepped_again(metrics(run), index) and cut not in again[0], output
    assert not ray_lines(output), ray_lines(output)
    network, _ = runs.load_network(run)
    assert objective(network, fixed) < 0.8 * initial_objective(fixed, tmp_path / "init")


def cut_and_heal(cluster: Cluster, run: Path, process: subprocess.Popen) -> tuple[str, int, str]:
    """Cut the worker node of a replica for CUT_SECONDS (its replacement placed elsewhere meanwhile), heal it, see
    the run step on and the replacement step, stop it with SIGTERM; the run's output, the replica and the node
    cut."""
    wait_for(lambda: len(metrics(run)[-1:]) and len(metrics(run)[-1]["replica_steps_per_s"]) == 2, 120,
             "two replicas stepping", process)
    replicas = actors(cluster, "replica")
    cut, index = next((ip, int(name.split("-replica-")[1].split("-")[0])) for name, ip in sorted(replicas.items())
                      if ip != cluster.head)
    with cluster.wire.cut(cut):
        healed = time.monotonic() + CUT_SECONDS
        wait_for(lambda: replicas_now(cluster, index, cut), PLACED_WITHIN, "the replacement on another node",
                 process)
        time.sleep(max(0.0, healed - time.monotonic()))
    after = metrics(run)[-1]["step"]
    wait_for(lambda: metrics(run)[-1]["step"] > after + 20 and stepped_again(metrics(run), index), 60,
             "steps after the heal, the replacement's among them", process)
    process.send_signal(signal.SIGTERM)
    output = finish(process, STOPS_WITHIN)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    return output, index, cut


def stepped_again(records: list[dict], index: int) -> bool:
    """Replica `index` in the step rates, then missing (it died: its rate is dropped), then back."""
    seen = gone = False
    for record in records:
        here = str(index) in record["replica_steps_per_s"]
        if here and gone:
            return True
        seen, gone = seen or here, gone or (seen and not here)
    return False


def replicas_now(cluster: Cluster, index: int, lost: str) -> bool:
    """Replica `index` alive on a node other than `lost`, from Ray's actor table."""
    try:
        placed = actors(cluster, "replica")
    except (RuntimeError, ValueError):  # the query's client saw the cluster mid-change: ask again
        return False
    return any(f"-replica-{index}-" in name and ip != lost for name, ip in placed.items())


def test_the_head_dies_the_driver_stops_and_a_new_cluster_resumes(cluster, tmp_path):
    """The head node (its GCS, its raylet: the driver's own node) killed mid-run: the driver stops (Ray ends a
    driver whose raylet is gone, status 1) within HEAD_LOST seconds with no line of Ray's, the checkpoint on disk
    is whole, and `--resume` on a new cluster (a head on another address) goes on from it."""
    run = tmp_path / "run"
    process = train(cluster, run, "--replicas", "2", "--ps-shards", "2", "--steps", "1000000")
    wait_for(lambda: runs.checkpoint_path(run).is_file() and metrics(run)[-1]["step"] >= 60, 120,
             "a checkpoint", process)
    cluster.kill_node(HEAD_IP)
    lost = time.monotonic()
    output = finish(process, HEAD_LOST + 60)
    assert time.monotonic() - lost < HEAD_LOST, output[-3000:]
    assert process.returncode == 1, output[-3000:]
    assert not ray_lines(output), ray_lines(output)
    saved = checkpoint.load(runs.checkpoint_path(run)).step  # whole: it loads
    assert saved >= 50
    cluster.start_node(cluster.next_ip(), head=True)
    resumed = cluster.popen([sys.executable, "-c", ENTRY, "train", "--address", cluster.address, "--out", str(run),
                             "--resume", "--replicas", "1", "--steps", str(saved + 20)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = finish(resumed, 240)
    assert resumed.returncode == 0, output[-3000:]
    assert checkpoint.load(runs.checkpoint_path(run)).step == saved + 20
