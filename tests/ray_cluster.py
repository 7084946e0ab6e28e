"""A Ray cluster on one machine for tests and benchmarks: a head and worker nodes, each its own `ray start` (its
own raylet and object store) on its own address (127.0.0.2, .3, ...), inside a private network namespace.

The namespace is held open by a sleeping process made with `unshare -n` (only `lo` up: 127.0.0.0/8 and
nothing else); every command runs in it through `nsenter`, and everything is stopped by process id: each
process whose network namespace is this one. Never `ray stop`, which kills every Ray of the machine.
Token authentication is on (a fresh token per cluster, in the nodes' and the driver's environment only),
usage stats and the dashboard off, so a node asks nothing of the world.

    with Cluster(workers=2) as cluster:
        cluster.run([sys.executable, "-m", "catneuron.cli", "train", "--address", cluster.address, ...])

Each node's processes run in a cgroup of the node's own, the driver and `run`/`popen` in the head's: the wire of
tests/wire.py (`cluster.wire`, None where nft or cgroup v2 is missing, `cluster.no_wire` says why) cuts a node
off (`with cluster.wire.cut(ip):`), and with `Cluster(relay=True)` gives the links latency and a rate
(`with cluster.wire.latency(ms, rate):`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wire import Wire, WireUnavailable

HEAD_IP = "127.0.0.2"
PORT = 6379
RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started"


class Unavailable(RuntimeError):
    """This machine cannot make a network namespace (no `unshare -n`): the only reason to skip a cluster test."""


def namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """`pid` and every process under it, from /proc (a snapshot)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += parents.get(p, [])
    return tree


def kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Namespace:
    """A network namespace of its own with `lo` up, held by a sleeping process."""

    def __init__(self) -> None:
        if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
            raise Unavailable("unshare, nsenter or ip is missing")
        made = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
        if made.returncode:
            raise Unavailable(f"unshare -n is refused here: {made.stderr.strip()}")
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec sleep 1d"],
                                       stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.holder.stdout.readline().strip() != "up":
            self.holder.kill()
            raise RuntimeError("the network namespace's lo did not come up")
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.identity = namespace_of(self.holder.pid)

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def interface(self, ip: str) -> str:
        """An interface of node `ip`'s own that carries its address (a bridge with no ports, up), as a machine's
        network card does: `GLOO_SOCKET_IFNAME` set to it makes that node's gloo bind its address, not lo's
        127.0.0.1 (packets between the nodes' addresses still go through lo)."""
        name = "node" + ip.rsplit(".", 1)[1]
        if not Path(f"/proc/{self.holder.pid}/net/dev").read_text().count(f"{name}:"):
            for step in (["link", "add", name, "type", "bridge"], ["addr", "add", f"{ip}/32", "dev", name],
                         ["link", "set", name, "up"]):
                subprocess.run(self.command(["ip", *step]), check=True, capture_output=True)
        return name

    def sockets(self, state: str = "established") -> Sockets:
        """The namespace's TCP sockets in `state` now ("established", "listening"): (local address:port, peer
        address:port, pid), from `ss -tnp` (one row per process holding the socket)."""
        out = subprocess.run(self.command(["ss", "-tnpH", "state", state]), capture_output=True, text=True,
                             check=True).stdout
        return [(local, peer, int(pid)) for local, peer, users in
                (line.split(None, 4)[2:] for line in out.splitlines() if len(line.split(None, 4)) == 5)
                for pid in re.findall(r"pid=(\d+)", users)]

    def pids(self) -> list[int]:
        """Every process in this namespace but its holder."""
        return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != self.holder.pid
                and namespace_of(int(p.name)) == self.identity]

    def close(self) -> None:
        """Kill every process in the namespace (by pid), then its holder."""
        deadline = time.monotonic() + 30
        while (left := self.pids()) and time.monotonic() < deadline:
            kill(left)
            time.sleep(0.2)
        self.holder.kill()
        self.holder.wait()
        if left:
            raise RuntimeError(f"processes outlived the cluster: {left}")


Sockets = list[tuple[str, str, int]]  # `Namespace.sockets`: (local address:port, peer address:port, pid)
EVERY_ADDRESS = {"*", "::", "0.0.0.0"}


def host(endpoint: str) -> str:
    """The address of `ss`'s `127.0.0.3:41229` or `[::ffff:127.0.0.3]:41229`."""
    return endpoint.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")


def gloo_on_the_nodes(listening: Sockets, established: Sockets, ranks: dict[int, str], rank0: int) -> bool:
    """Whether, in one snapshot of a namespace's sockets, each rank (pid -> its node's address) listens on its own
    node's address (gloo's device) and on no other but every address (a TCP store), and every other rank is
    connected to rank 0 (pid `rank0`) at rank 0's node's address. On one machine the kernel gives a connection to
    a local address that same address as its source, so the connecting side's own end says nothing; on real
    machines it is the card's."""
    for pid, ip in ranks.items():
        bound = {host(local) for local, _, p in listening if p == pid}
        if ip not in bound or not bound <= {ip} | EVERY_ADDRESS:
            return False
    ports = {local.rsplit(":", 1)[1] for local, _, p in listening if p == rank0}
    to_rank0 = {(p, host(peer)) for _, peer, p in established
                if p in ranks and p != rank0 and peer.rsplit(":", 1)[1] in ports}
    return {p for p, _ in to_rank0} == set(ranks) - {rank0} and {ip for _, ip in to_rank0} == {ranks[rank0]}


@dataclass
class Node:
    ip: str
    process: subprocess.Popen
    log: Path

    def pids(self) -> list[int]:
        """The node's processes: its `ray start`, raylet, object store, workers (and, on the head, the GCS)."""
        return children(self.process.pid)


class Cluster:
    """A head on 127.0.0.2 and `workers` nodes on 127.0.0.3, .4, ..., `cpus` CPUs each, in a namespace of its own."""

    def __init__(self, workers: int = 2, cpus: int = 1, head_cpus: int | None = None,
                 root: Path | None = None, relay: bool = False) -> None:
        self.workers, self.cpus = workers, cpus
        self.head_cpus = cpus if head_cpus is None else head_cpus
        # Short: Ray's socket paths must stay under 108 bytes.
        self.temp = Path(tempfile.mkdtemp(prefix="cnray-", dir="/tmp"))
        self.root = root or self.temp
        self.token = secrets.token_hex(32)
        home = self.temp / "home"
        home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
            "HOME": str(home), "RAY_TMPDIR": str(self.temp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # A node lost is declared dead after about 3 s (Ray's default: 30 s), so that a test sees its replacement.
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_timeout_ms": "1000"}
        self.nodes: list[Node] = []
        self.head = HEAD_IP
        self.namespace: Namespace | None = None
        # Each node's processes in a cgroup of its own, for tests/wire.py: partitions always, latency with `relay`.
        self.relay = relay
        self.wire: Wire | None = None
        self.no_wire = ""  # why there is none

    @property
    def address(self) -> str:
        return f"{self.head}:{PORT}"

    def __enter__(self) -> Cluster:
        self.namespace = Namespace()
        try:
            self.start_wire()
            self.start_node(HEAD_IP, head=True)
            for i in range(self.workers):
                self.start_node(f"127.0.0.{3 + i}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_wire(self) -> None:
        try:
            self.wire = Wire(self.namespace, relay=self.relay)
        except WireUnavailable as e:
            if self.relay:
                raise
            self.no_wire = str(e)

    def on(self, ip: str, argv: Sequence[str]) -> list[str]:
        """`argv` as a process of node `ip` (in its cgroup where there is a wire), in the namespace."""
        return self.namespace.command(self.wire.command(ip, argv) if self.wire else argv)

    def start_node(self, ip: str, head: bool = False, timeout: float = 90) -> Node:
        """`ray start` on `ip` (the head, or a node joining it), returned once Ray says it runs."""
        log = self.temp / f"node-{ip}.log"
        if head:  # the first, or a new cluster's after the last head died
            self.head = ip
            args = ["--head", "--port", str(PORT), "--num-cpus", str(self.head_cpus), "--include-dashboard=false",
                    "--disable-usage-stats"]
        else:
            args = ["--address", self.address, "--num-cpus", str(self.cpus)]
        # Its processes (the ranks of model-parallel replicas among them) inherit its gloo interface.
        env = self.env | {"GLOO_SOCKET_IFNAME": self.namespace.interface(ip)}
        with open(log, "w") as out:
            process = subprocess.Popen(
                self.on(ip, [RAY, "start", "--block", "--node-ip-address", ip, *args]),
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(ip, process, log)
        self.nodes.append(node)
        deadline = time.monotonic() + timeout
        while STARTED not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start on {ip} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return node

    def next_ip(self) -> str:
        """An address no node of this cluster has had: one past the highest."""
        return f"127.0.0.{max(int(n.ip.rsplit('.', 1)[1]) for n in self.nodes) + 1}"

    def top_up(self) -> None:
        """Start worker nodes on new addresses until `workers` of them are alive again: a test that lost a node
        (killed, or cut off and so declared dead, which Ray never takes back) leaves the next a whole cluster."""
        def alive() -> int:
            return sum(n.ip != self.head and n.process.poll() is None for n in self.nodes)

        while alive() < self.workers:
            self.start_node(self.next_ip())

    def node(self, ip: str) -> Node:
        return next(n for n in self.nodes if n.ip == ip)

    def kill_node(self, ip: str) -> list[int]:
        """A machine lost: SIGKILL to every process of node `ip` (the raylet, object store, workers)."""
        node = self.node(ip)
        pids = node.pids()
        kill(pids)
        node.process.wait(timeout=30)
        return pids

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """A process on the head node (in the cluster's namespace) with the cluster's environment (the token
        included)."""
        return subprocess.Popen(self.on(self.head, argv), env=self.env | (env or {}), start_new_session=True,
                                **kwargs)

    def run(self, argv: Sequence[str], timeout: float = 300, env: dict[str, str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.on(self.head, argv), env=self.env | (env or {}), timeout=timeout,
                              capture_output=True, text=True, **kwargs)

    def python(self, code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-c", code, *args], timeout=timeout)

    def placement(self, prefix: str, state: str = "ALIVE") -> dict[str, str]:
        """Ray's state (the GCS's actor table): the node address of each actor in `state` whose name starts with
        `prefix`."""
        out = self.python(PLACEMENT, self.address, prefix, state)
        if out.returncode:
            raise RuntimeError(f"reading Ray's actor table failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        if self.namespace is not None:
            self.namespace.close()
            self.namespace = None
        if self.wire is not None:
            self.wire.close()
            self.wire = None
        shutil.rmtree(self.temp, ignore_errors=True)


PLACEMENT = """
import json, logging, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)
nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
actors = ray._private.state.actors()
print(json.dumps({a["Name"]: nodes.get(a["Address"]["NodeID"], "?") for a in actors.values()
                  if a["State"] == sys.argv[3] and a["Name"].startswith(sys.argv[2])}))
"""
