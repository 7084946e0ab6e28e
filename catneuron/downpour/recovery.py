"""What the driver watches to recover from a lost node: replacements that wait to be placed, replicas whose chunk
never comes back, and parameter shards that Ray restarted from their snapshot (and the pushes that cost).

A node that dies takes its replicas and shards with it. Ray restarts the shards (their `max_restarts`) wherever
there is room, from their last snapshot; the driver replaces the replicas. Neither is instant: Ray declares a
node dead only when its health checks fail (about 30 s by default), a replacement needs a node with the CPUs
(and GPUs) it asks for, and a chunk that waits on a shard being restarted waits with it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

# How long a replacement may wait to be placed before the run says what it waits for.
SAY_WAITING_AFTER = 5.0
# How often the driver asks each shard its version: a restarted shard lost the pushes since its snapshot, counted
# from the last version the driver saw (so at least that many; at most this long's worth more).
PROBE_SECONDS = 0.2
# How long the head (its GCS) may not answer before the run stops: Ray's own driver would wait 60 s, printing.
HEAD_GRACE = 10.0


def node_addresses() -> dict[str, str]:
    """Alive nodes: id -> address."""
    import ray

    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}


def node_of(actor) -> str:
    """The address of the node an actor runs on, from Ray's actor table."""
    import ray

    entry = ray._private.state.actors(actor._actor_id.hex())
    return node_addresses().get(entry.get("Address", {}).get("NodeID"), "an unknown node")


def free_resources(need: dict[str, float]) -> str:
    """What each alive node has free of the resources in `need`, for the line saying why a replica waits."""
    import ray

    free = ray._private.state.available_resources_per_node()
    return ", ".join(f"{address} " + " ".join(f"{free.get(node, {}).get(k, 0.0):g} {k}" for k in need)
                     for node, address in sorted(node_addresses().items(), key=lambda item: item[1]))


class Placements:
    """Replacement replicas not yet running: each is said once when it has waited SAY_WAITING_AFTER seconds,
    with what it needs and what the nodes have free, and counted until it runs."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.waiting: dict[int, tuple[float, list, dict[str, float], bool]] = {}
        self.actors: dict[int, list] = {}

    def started(self, replica: int, actors: list, need: dict[str, float]) -> None:
        self.waiting[replica] = (time.monotonic(), [a.__ray_ready__.remote() for a in actors], need, False)
        self.actors[replica] = actors

    def forget(self, replica: int) -> None:
        self.waiting.pop(replica, None)
        self.actors.pop(replica, None)

    def check(self) -> int:
        """Say what a replacement waits for (once), drop those now running; returns how many still wait."""
        import ray

        for replica, (since, refs, need, said) in list(self.waiting.items()):
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            if len(ready) == len(refs):
                del self.waiting[replica]
                if said:
                    self.say(f"replica {replica} runs on {node_of(self.actors[replica][0])} after waiting "
                             f"{time.monotonic() - since:.0f} s")
            elif not said and time.monotonic() - since >= SAY_WAITING_AFTER:
                wants = " and ".join(f"{v:g} {k}" for k, v in need.items())
                self.say(f"replica {replica} waits to be placed: each of its {len(refs)} process(es) needs a node "
                         f"with {wants} free; free now: {free_resources(need)}")
                self.waiting[replica] = (since, refs, need, True)
        return len(self.waiting)

    def placing(self, replica: int) -> bool:
        return replica in self.waiting


class ShardRestarts:
    """Asks each shard its (version, snapshot it was restored from) every PROBE_SECONDS; a new snapshot version
    means Ray restarted the shard: the pushes it had applied since that snapshot are lost, and the run says how
    many."""

    def __init__(self, shards: list, say: Callable[[str], None]) -> None:
        self.shards, self.say = shards, say
        self.seen: list[tuple[int, int | None]] = [(0, None)] * len(shards)
        self.probes: dict[int, tuple[float, Any]] = {}  # shard -> when it was asked, the answer's ref
        self.due = [0.0] * len(shards)  # when to ask each shard next
        self.lost = 0  # pushes lost, over all shards and restarts

    def check(self) -> None:
        import ray

        now = time.monotonic()
        for k, shard in enumerate(self.shards):
            if k not in self.probes:
                if now >= self.due[k]:
                    self.probes[k] = (now, shard.progress.remote())
                continue
            asked, ref = self.probes[k]
            if not ray.wait([ref], timeout=0)[0]:
                continue  # a shard being restarted answers once it is back
            del self.probes[k]
            self.due[k] = asked + PROBE_SECONDS
            version, restored, node = ray.get(ref)
            last, before = self.seen[k]
            if restored is not None and restored != before:
                lost = max(0, last - restored)
                self.lost += lost
                self.say(f"parameter shard {k} restarted on {node} from its snapshot at version {restored}: the {lost} "
                         f"push(es) it had applied since are lost (at least: counted to version {last}, the last "
                         f"seen)")
            self.seen[k] = (version, restored)


class HeadLost(Exception):
    """The Ray head stopped answering: nothing more can be asked of the cluster, nor Ray shut down cleanly."""


class HeadWatch:
    """Connects to the head's GCS port once a second; raises HeadLost when it has not answered for HEAD_GRACE s."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.address, self.target = address, (host, int(port))
        self.answered = self.asked = time.monotonic()
        self.error: OSError | None = None

    def answers(self) -> bool:
        """Whether the head answers now (before anything that needs it and would block without it: starting an
        actor)."""
        self.asked = time.monotonic()
        try:
            socket.create_connection(self.target, timeout=1.0).close()
        except OSError as e:
            self.error = e
            return False
        self.answered = self.asked
        return True

    def check(self) -> None:
        now = time.monotonic()
        if now - self.asked >= 1.0:
            self.answers()
        if now - self.answered >= HEAD_GRACE:
            e = self.error
            raise HeadLost(f"the Ray head at {self.address} has not answered for {now - self.answered:.0f} s "
                           f"({(e.strerror or e) if e is not None else 'no answer'})")
