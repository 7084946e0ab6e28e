"""A wire between the nodes of a one-machine cluster (tests/ray_cluster.py): partitions, latency and bandwidth.

All nodes share one network namespace and their addresses sit on its `lo`, so a connection from node 3 to
127.0.0.3 and one from node 4 to 127.0.0.3 look alike to the kernel (the source address is the destination's):
addresses cannot tell inter-node from intra-node traffic. Processes can: each node's processes run in a cgroup
(v2) of their own, and an nftables table in the namespace tags every new connection with the node (cgroup) that
opened it (`ct mark`). A connection is inter-node when its tag differs from the node of its original destination.

- `partition(ip)` drops every packet of the inter-node connections into or out of node `ip` (existing and new,
  both directions, as a pulled cable does); `heal(ip)` stops dropping them, and TCP resumes what had not timed
  out. Traffic within a node, and the harness's own (its processes are in no node's cgroup), is untouched.
- Latency and bandwidth come from a relay in user space, because this kernel has no netem (`tc qdisc add dev lo
  root netem` answers "Specified qdisc kind is unknown"; of the qdiscs only tbf and htb exist, and they
  cannot tell node from node). With `relay=True`, every new inter-node TCP connection is redirected (nat
  `redirect`, one port per sending node) to the relay, which connects to the original destination
  (SO_ORIGINAL_DST) and forwards each chunk after the link's one-way delay, through a token bucket per ordered
  pair of nodes when a rate is set. `latency(ms, rate)` changes both at once, for connections old and new.
  What the relay costs is measured in docs/distributed.md ("On a cluster").

    wire = Wire(namespace, relay=True)
    subprocess.Popen(namespace.command(wire.command("127.0.0.3", argv)))
    with wire.latency(5, rate=10e6):   # 5 ms each way, 10 MB/s per link and direction
        ...
    with wire.cut("127.0.0.4"):        # node 4 cut off; healed on exit
        ...

Run as a script, this module is the relay (`python wire.py relay BASE_PORT`): it reads `DELAY_S RATE` lines
on stdin (RATE 0: unlimited), answers `ok` to each, and forwards until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
TABLE = "cnwire"
RELAY_MARK = 1  # the relay's own connections: never redirected, dropped like a node's when they cross a cut
RELAY_BASE = 5500  # the relay listens on 127.0.0.1:RELAY_BASE+n for what node n sends
NODES = range(2, 32)  # node n is 127.0.0.n
SO_ORIGINAL_DST = 80
CHUNK = 65536
BACKLOG = 0.01  # seconds of a rate-limited link's time that may be booked ahead


class WireUnavailable(RuntimeError):
    """No nft, or no writable cgroup v2 hierarchy: the wire cannot be made here."""


def node_number(ip: str) -> int:
    a, b, c, d = (int(x) for x in ip.split("."))
    if (a, b, c) != (127, 0, 0) or d not in NODES:
        raise ValueError(f"{ip}: a node's address is 127.0.0.{NODES.start}..{NODES.stop - 1}")
    return d


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1's)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2" and Path(fields[1]).is_relative_to(CGROUP_FS):
            return Path(fields[1])
    raise WireUnavailable("no cgroup v2 hierarchy is mounted under /sys/fs/cgroup")


class Wire:
    """The cgroups of a namespace's nodes and the nft table that tags, cuts and detours their connections."""

    def __init__(self, namespace, relay: bool = False) -> None:
        if shutil.which("nft") is None:
            raise WireUnavailable("nft is missing (Debian's nftables)")
        self.namespace = namespace
        self.root = cgroup2_mount() / f"cnwire-{secrets.token_hex(4)}"
        try:
            self.root.mkdir()
        except OSError as e:
            raise WireUnavailable(f"cannot make a cgroup at {self.root}: {e.strerror}") from e
        self.nodes: set[int] = set()
        self.relay: subprocess.Popen | None = None
        try:
            self.nft(f"""
table ip {TABLE} {{
  set cut_nodes {{ type mark; }}
  set cut_addresses {{ type ipv4_addr; }}
  chain tag {{ type filter hook output priority -150; }}
  chain detour {{ type nat hook output priority -100; }}
  chain cut {{ type filter hook output priority 0;
    ct mark {RELAY_MARK} ct original ip daddr @cut_addresses drop
  }}
}}""")
            self.tag("relay", RELAY_MARK)
            if relay:
                self.start_relay()
        except BaseException:
            self.close()
            raise

    def nft(self, script: str) -> None:
        done = subprocess.run(self.namespace.command(["nft", "-f", "-"]), input=script, capture_output=True,
                              text=True)
        if done.returncode:
            raise RuntimeError(f"nft refused:\n{script}\n{done.stderr}")

    def group(self, name: str) -> Path:
        return self.root / name

    def tag(self, name: str, mark: int) -> None:
        """A cgroup `name` whose processes' new connections are tagged `mark`."""
        self.group(name).mkdir(exist_ok=True)
        nft_path = self.group(name).relative_to(CGROUP_FS)  # nft's path is under /sys/fs/cgroup
        level = len(self.group(name).relative_to(cgroup2_mount()).parts)
        self.nft(f'add rule ip {TABLE} tag ct state new socket cgroupv2 level {level} "{nft_path}" '
                 f"ct mark set {mark}\n")

    def node(self, ip: str) -> Path:
        """Node `ip`'s cgroup, made (with its rules) the first time: its connections tagged with its number, cut
        when either end is cut, detoured through the relay when it runs."""
        n = node_number(ip)
        if n not in self.nodes:
            self.tag(f"node{n}", n)
            others = f"ct original ip daddr != {ip} ct original ip daddr 127.0.0.2-127.0.0.254"
            self.nft(f"add rule ip {TABLE} cut ct mark {n} {others} ct original ip daddr @cut_addresses drop\n"
                     f"add rule ip {TABLE} cut ct mark {n} {others} ct mark @cut_nodes drop\n"
                     + (f"add rule ip {TABLE} detour ct mark {n} ip daddr != {ip} ip daddr 127.0.0.2-127.0.0.254 "
                     f"meta l4proto tcp redirect to :{RELAY_BASE + n}\n" if self.relay else ""))
            self.nodes.add(n)
        return self.group(f"node{n}")

    def command(self, ip: str, argv: Sequence[str]) -> list[str]:
        """`argv` run as a process of node `ip` (its cgroup), to be run in the namespace."""
        return self.enter(self.node(ip), argv)

    @staticmethod
    def enter(group: Path, argv: Sequence[str]) -> list[str]:
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group / "cgroup.procs"), *argv]

    def partition(self, ip: str) -> None:
        """Node `ip` cut off from the others, both ways: its inter-node packets are dropped from now on."""
        self.node(ip)
        self.nft(f"add element ip {TABLE} cut_nodes {{ {node_number(ip)} }}\n"
                 f"add element ip {TABLE} cut_addresses {{ {ip} }}\n")

    def heal(self, ip: str) -> None:
        self.nft(f"delete element ip {TABLE} cut_nodes {{ {node_number(ip)} }}\n"
                 f"delete element ip {TABLE} cut_addresses {{ {ip} }}\n")

    @contextlib.contextmanager
    def cut(self, ip: str) -> Iterator[None]:
        """Node `ip` partitioned for the length of the block, healed after it."""
        self.partition(ip)
        try:
            yield
        finally:
            self.heal(ip)

    def start_relay(self) -> None:
        """The relay, in the namespace and its own cgroup; every node's inter-node TCP goes through it from now."""
        argv = self.enter(self.group("relay"), [sys.executable, str(Path(__file__).resolve()), "relay",
                                                str(RELAY_BASE)])
        self.relay = subprocess.Popen(self.namespace.command(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, start_new_session=True)
        if self.relay.stdout.readline().strip() != "listening":
            raise RuntimeError("the wire's relay did not start")

    def set_link(self, delay_ms: float, rate: float | None = None) -> None:
        """Every inter-node link's one-way delay and its rate (bytes/s per ordered pair of nodes; None: unlimited),
        from now, for the connections already open too."""
        if self.relay is None:
            raise RuntimeError("latency needs the relay: make the wire (the Cluster) with relay=True")
        self.relay.stdin.write(f"{delay_ms / 1000} {rate or 0}\n")
        self.relay.stdin.flush()
        if self.relay.stdout.readline().strip() != "ok":
            raise RuntimeError("the wire's relay did not take the setting")

    @contextlib.contextmanager
    def latency(self, ms: float, rate: float | None = None) -> Iterator[None]:
        """Links of `ms` milliseconds each way (and `rate` bytes/s) for the length of the block; 0 and unlimited
        after it."""
        self.set_link(ms, rate)
        try:
            yield
        finally:
            self.set_link(0)

    def close(self) -> None:
        """Remove the cgroups once their processes are gone (the namespace's close kills them; the table dies with
        the namespace)."""
        deadline = time.monotonic() + 10
        for group in [g for g in self.root.glob("*") if g.is_dir()] + [self.root]:
            while group.exists():
                try:
                    group.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


# -- the relay ------------------------------------------------------------------------------------------------


def answer(line: str) -> None:
    """A line to the wire (the relay's stdout)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Link:
    """One direction between two nodes: a chunk leaves when the link is free and has been sent at `rate`, and
    arrives `delay` later."""

    def __init__(self) -> None:
        self.free_at = 0.0

    def arrival(self, now: float, size: int, delay: float, rate: float) -> float:
        leaves = max(now, self.free_at) + (size / rate if rate else 0.0)
        self.free_at = leaves
        return leaves + delay


class Relay:
    def __init__(self) -> None:
        self.delay, self.rate = 0.0, 0.0
        self.links: dict[tuple[int, int], Link] = {}

    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link) -> None:
        """Reader to writer, each chunk written at its arrival time, in order; the queue bounds what is in flight
        (TCP's backpressure does the rest)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.create_task(send())
        try:
            # Rate-limited, in small pieces, and never booking the link more than BACKLOG ahead: a link that
            # queued seconds of one bulk transfer would starve the small messages sharing it (heartbeats).
            while data := await reader.read(max(1024, int(self.rate * BACKLOG)) if self.rate else CHUNK):
                while self.rate and (ahead := link.free_at - loop.time()) > BACKLOG:
                    await asyncio.sleep(ahead - BACKLOG)
                await queue.put((link.arrival(loop.time(), len(data), self.delay, self.rate), data))
        except OSError:
            pass
        await queue.put((0.0, b""))
        with contextlib.suppress(OSError):
            await sender

    def serve(self, source: int) -> Callable:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket").getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, address = struct.unpack_from("!H4s", raw, 2)
            target = socket.inet_ntoa(address)
            try:
                up_reader, up_writer = await asyncio.open_connection(target, port)
            except OSError:
                writer.close()
                return
            destination = int(target.rsplit(".", 1)[1])
            there = self.links.setdefault((source, destination), Link())
            back = self.links.setdefault((destination, source), Link())
            await asyncio.gather(self.forward(reader, up_writer, there), self.forward(up_reader, writer, back))
            for w in (writer, up_writer):
                w.close()

        return connection

    async def control(self) -> None:
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            delay, rate = line.split()
            self.delay, self.rate = float(delay), float(rate)
            answer("ok")

    async def main(self, base: int) -> None:
        for n in NODES:
            await asyncio.start_server(self.serve(n), "127.0.0.1", base + n)
        answer("listening")
        await self.control()


if __name__ == "__main__" and sys.argv[1:2] == ["relay"]:
    asyncio.run(Relay().main(int(sys.argv[2])))
