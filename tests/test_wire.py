"""The wire of the one-machine cluster (tests/wire.py), on plain sockets: processes of nodes 3 and 4 in the
cluster's kind of namespace, each in its node's cgroup, an echo server on each node's address.

A partition must cut exactly the inter-node connections (new and established, both ways) and nothing within a
node; a heal must give them back; the relay must delay each direction by the link's delay, keep the bytes
intact, and hold a rate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import missing_tool
from ray_cluster import Namespace, Unavailable
from wire import Wire, WireUnavailable

ECHO = """
import socket, sys, threading
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("up", flush=True)
def echo(c):
    while data := c.recv(65536):
        c.sendall(data)
while True:
    threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()
"""

# Commands on stdin, one JSON answer a line: `connect IP PORT TIMEOUT` (a new connection: its number, or the
# error), `echo N BYTES TIMEOUT` (send BYTES random bytes on connection N, wait for them back: seconds taken and
# whether they came back intact, or the error).
AGENT = """
import json, os, socket, sys, time
conns = []
for line in sys.stdin:
    command, *args = line.split()
    try:
        if command == "connect":
            conns.append(socket.create_connection((args[0], int(args[1])), timeout=float(args[2])))
            answer = {"ok": len(conns) - 1}
        else:
            c, data = conns[int(args[0])], os.urandom(int(args[1]))
            c.settimeout(float(args[2]))
            start = time.monotonic()
            c.sendall(data)
            back = b""
            while not back.endswith(data):
                back += c.recv(65536)
            answer = {"ok": time.monotonic() - start, "intact": back[-len(data):] == data}
    except OSError as e:
        answer = {"error": type(e).__name__}
    print(json.dumps(answer), flush=True)
"""
NODES = ("127.0.0.3", "127.0.0.4")


class Node:
    """An echo server on the node's address, port 9000, and an agent, both in the node's cgroup."""

    def __init__(self, namespace: Namespace, wire: Wire, ip: str) -> None:
        def start(code: str, *args: str) -> subprocess.Popen:
            return subprocess.Popen(namespace.command(wire.command(ip, [sys.executable, "-c", code, *args])),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        self.server = start(ECHO, ip, "9000")
        assert self.server.stdout.readline().strip() == "up"
        self.agent = start(AGENT)

    def ask(self, *command: object) -> dict:
        self.agent.stdin.write(" ".join(map(str, command)) + "\n")
        self.agent.stdin.flush()
        return json.loads(self.agent.stdout.readline())

    def connect(self, ip: str, timeout: float = 2.0) -> dict:
        return self.ask("connect", ip, 9000, timeout)

    def echo(self, conn: int, size: int = 16, timeout: float = 2.0) -> dict:
        return self.ask("echo", conn, size, timeout)


def wired(relay: bool):
    try:
        namespace = Namespace()
    except Unavailable as e:
        missing_tool(f"no network namespace can be made here: {e}")
    try:
        wire = Wire(namespace, relay=relay)
    except WireUnavailable as e:
        namespace.close()
        missing_tool(f"the wire cannot be made here: {e}")
    try:
        yield namespace, wire, {ip: Node(namespace, wire, ip) for ip in NODES}
    finally:
        namespace.close()
        wire.close()


@pytest.fixture
def plain():
    yield from wired(relay=False)


@pytest.fixture
def relayed():
    yield from wired(relay=True)


def test_a_partition_cuts_inter_node_connections_both_ways_and_a_heal_restores_them(plain):
    """Node 3 partitioned: connections within node 3 and within node 4 work; new ones between them time out
    both ways; an established one stalls. Healed: the stalled one delivers, new ones connect."""
    _, wire, nodes = plain
    three, four = nodes["127.0.0.3"], nodes["127.0.0.4"]
    across = four.connect("127.0.0.3")["ok"]
    assert four.echo(across)["intact"]
    with wire.cut("127.0.0.3"):
        inside3, inside4 = three.connect("127.0.0.3")["ok"], four.connect("127.0.0.4")["ok"]
        assert three.echo(inside3)["intact"] and four.echo(inside4)["intact"]
        assert three.connect("127.0.0.4", timeout=0.5) == {"error": "TimeoutError"}
        assert four.connect("127.0.0.3", timeout=0.5) == {"error": "TimeoutError"}
        assert four.echo(across, timeout=0.5) == {"error": "TimeoutError"}
    # The packets dropped meanwhile are retransmitted (TCP's backoff: within seconds).
    assert four.echo(across, timeout=15)["intact"]
    assert three.echo(three.connect("127.0.0.4")["ok"])["intact"]
    assert four.echo(four.connect("127.0.0.3")["ok"])["intact"]


def test_the_harness_is_no_node_and_is_never_cut(plain):
    """The test's own processes (no node's cgroup) reach a cut node: they are the observer, not the cluster."""
    namespace, wire, _ = plain
    probe = "import socket; socket.create_connection(('127.0.0.3', 9000), timeout=2).close(); print('reached')"
    with wire.cut("127.0.0.3"):
        reached = subprocess.run(namespace.command([sys.executable, "-c", probe]), capture_output=True, text=True)
    assert reached.stdout.strip() == "reached", reached.stderr


def test_the_relay_delays_each_direction_keeps_the_bytes_and_holds_a_rate(relayed):
    """Links at 50 ms: a round trip between nodes takes at least 100 ms, one within a node far less, and a
    megabyte comes back intact; at 2 MB/s a megabyte takes at least half a second each way; after the block,
    round trips between nodes are fast again (the same connection)."""
    _, wire, nodes = relayed
    three, four = nodes["127.0.0.3"], nodes["127.0.0.4"]
    across, inside = three.connect("127.0.0.4")["ok"], three.connect("127.0.0.3")["ok"]
    with wire.latency(50):
        trips = [three.echo(across)["ok"] for _ in range(3)]
        assert min(trips) >= 0.1, trips
        assert three.echo(inside)["ok"] < 0.05
        big = three.echo(across, size=1 << 20, timeout=10)
        assert big["intact"] and big["ok"] >= 0.1
    with wire.latency(0, rate=2e6):
        assert three.echo(across, size=1 << 20, timeout=10)["ok"] >= (1 << 20) / 2e6
    assert max(three.echo(across)["ok"] for _ in range(3)) < 0.05
    assert four.echo(four.connect("127.0.0.3")["ok"])["intact"]
