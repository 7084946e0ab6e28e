"""Downpour SGD on Ray (Dean et al. 2012; Le et al. 2012): model replicas on their own portions of the data,
asynchronously against parameters sharded over parameter-server actors.

Each replica runs the single-process trainer's model and loss code; it fetches fresh parameters from
every shard each `fetch_every` steps and pushes the gradient it accumulated to every shard each
`push_every` steps; the shards apply it with the config's optimizer (catneuron.downpour.shards).
Nothing waits for anything else: the driver only hands each replica its next chunk of steps (about a
second of work), writes the metrics and checkpoints, and replaces replicas that die. With one
replica, one shard and P = G = 1, this is the single-process trainer, step for step.

With `partitions` (model parallelism), a replica is R*C ranks, each fetching from and pushing to only
the shards of its block, and a dead rank takes its replica down (catneuron.downpour.blocks).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import safe_open

from catneuron.data.shards import ShardSource
from catneuron.data.sources import ArraySource, BatchSource
from catneuron.downpour.blocks import BlockShards, ReplicaRanks, merge_reports, start_ranks
from catneuron.downpour.ray_env import ray_session
from catneuron.downpour.recovery import HeadLost, HeadWatch, Placements, ShardRestarts, node_addresses, node_of
from catneuron.downpour.replica import Replica
from catneuron.downpour.shards import ParameterShard, RowShards, snapshot_name
from catneuron.errors import UserError
from catneuron.model.network import Network
from catneuron.parallel.device import CPU, gpus_per_rank
from catneuron.store import runs
from catneuron.train.loop import Session, TrainResult
from catneuron.train.trainer import Trainer, check_finite
from catneuron.train.watch import Watch

PS_DIR = "ps"
log = logging.getLogger(__name__)
RAY_LOG = "ray.log"  # Ray's messages to the driver, and where its own logs are
FAILURE_POLICIES = ("replace", "drop", "stop")
# A replica that dies this many times within this many seconds is not unlucky: its error stops the run.
DEATHS, DEATH_WINDOW = 3, 60.0


@dataclass(frozen=True)
class DownpourOptions:
    """N replicas, K shards, fetch every P steps, push every G steps; docs/distributed.md says what they trade."""

    replicas: int = 2
    ps_shards: int = 1
    fetch_every: int = 1
    push_every: int = 1
    address: str | None = None
    on_failure: str = "replace"
    snapshot_seconds: float = 300.0
    chunk_seconds: float = 1.0
    partitions: tuple[int, int] = (1, 1)  # each replica as R x C ranks (model parallelism)
    device: torch.device = CPU  # where replicas (ranks) compute: cpu, or cuda for a GPU each; shards stay on CPU
    # A chunk is about `chunk_seconds` of work: one not back after this long (its node cut off, a shard it waits on
    # not coming back) is stuck, and its replica is replaced. Longer than Ray takes to declare a lost node dead
    # and restart its shards (about 30 s).
    stall_seconds: float = 120.0

    @property
    def ranks(self) -> int:
        """Processes per replica."""
        return self.partitions[0] * self.partitions[1]

    def validate(self) -> DownpourOptions:
        for flag, value in (("--replicas", self.replicas), ("--ps-shards", self.ps_shards),
                            ("--fetch-every", self.fetch_every), ("--push-every", self.push_every)):
            if value < 1:
                raise UserError(f"{flag} {value}: must be at least 1")
        if not self.snapshot_seconds > 0:
            raise UserError(f"--ps-snapshot-minutes {self.snapshot_seconds / 60:g}: must be positive")
        if self.on_failure not in FAILURE_POLICIES:
            raise UserError(f"--on-replica-failure {self.on_failure}: choose {', '.join(FAILURE_POLICIES)}")
        return self


def say(line: str) -> None:
    """A line about the run's replicas and shards: a warning, which the command shows on stderr beside the progress
    line (catneuron.cli.logs)."""
    log.warning(f"catneuron: {line}")


def check_feeds(source: BatchSource, replicas: int) -> None:
    """Refuse, before Ray starts, more replicas than the data can give a portion each."""
    if isinstance(source, ArraySource) and len(source.images) < replicas:
        raise UserError(f"--replicas {replicas}: {source.description} has {len(source.images)} image(s), and each "
                        f"replica needs its own; use at most {len(source.images)} replicas")
    if isinstance(source, ShardSource):
        source.check_replicas(replicas)


# What Ray says of an actor cancelled before it started (ActorDiedError's message; no attribute carries it).
NEVER_RAN = "The actor never ran"


def death_reason(error: Exception) -> str:
    """The last line of a dead actor's error (the exception its code raised, or how Ray lost it), plain text."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _death_among(refs: list, error: Exception) -> Exception:
    """A rank that dies makes its replica's other ranks fail too (their exchanges with it break), perhaps first:
    report the death (waiting a second for it) rather than its echo."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(error, RayActorError) or len(refs) == 1:
        return error
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
    for ref in done:
        try:
            ray.get(ref)
        except RayActorError as death:
            return death
        except RayTaskError:
            continue
    return error


def _saved_positions(trainer: Trainer, replicas: int) -> list[int] | None:
    """Where each replica's stream stood at the checkpoint being resumed, if it was a run with as many."""
    path = runs.checkpoint_path(trainer.run)
    if trainer.step == 0 or not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        positions = json.loads((f.metadata() or {}).get("extra", "{}")).get("replica_steps")
    return positions if isinstance(positions, list) and len(positions) == replicas else None


class Downpour:
    """Runs a Trainer's model, data and run folder with Downpour SGD; `fit` and the checkpoint are the Trainer's."""

    leader = True  # the driver reports and writes the run folder

    def __init__(self, trainer: Trainer, options: DownpourOptions) -> None:
        self.options = options.validate()
        if options.device.index is not None:
            raise UserError(f"--device {options.device}: each Downpour replica (rank) takes the GPU Ray gives it: "
                            f"give --device cuda")
        check_feeds(trainer.source, options.replicas)
        self.trainer: Trainer = trainer
        trainer.resume_flags = f" --replicas {options.replicas}" + (
            f" --partitions {options.partitions[0]}x{options.partitions[1]}" if options.ranks > 1 else "")
        self.session: str = uuid.uuid4().hex[:8]
        if options.partitions == (1, 1):
            self.shard_map: RowShards | BlockShards = RowShards(trainer.network, options.ps_shards)
        else:  # a grid with empty blocks is refused here, before Ray starts
            self.shard_map = BlockShards(trainer.network, trainer.config.model, options.partitions, options.ps_shards)
        self.base_step: int = trainer.step // options.replicas
        self.positions: list[int] = _saved_positions(trainer, options.replicas) or [self.base_step] * options.replicas
        self.incarnations: list[int] = [0] * options.replicas
        self.deaths: dict[int, deque[float]] = {i: deque() for i in range(options.replicas)}
        self.restarts: dict[int, float] = {}  # replica -> when its replacement starts (backoff)
        self.lost_at: dict[int, float] = {}  # replaced replica -> when it died, until its replacement steps
        self.failure: str | None = None  # why the run stops early, when a replica's failure stops it
        self.shards: list = []
        self.replicas: dict[int, ReplicaRanks] = {}
        self.shard_states: list[dict] = []
        self.pending: dict = {}  # the ref of each process's chunk -> its replica
        self.chunks: dict[int, tuple[list, int]] = {}  # replica -> the refs of its chunk (one per process), its steps
        self.granted: int = 0  # steps handed out and not yet done
        self.rates: dict[int, float] = {}  # replica -> its steps per second in its last chunk
        self.moved: dict[str, int] = {"fetched": 0, "pushed": 0}  # bytes between replicas and shards
        self.placements: Placements = Placements(say)
        self.shard_restarts: ShardRestarts | None = None
        self.stalled: dict[int, str] = {}  # replica -> why it was killed as stuck
        self.waiting: int = 0  # replacements Ray has not placed yet
        self.scanner: ThreadPoolExecutor | None = None  # the watch's thread, for the length of a fit
        self.scanning: tuple[Future, Network] | None = None  # the watch's scan in flight, and its network

    def actor_name(self, kind: str, index: int, incarnation: int = 0) -> str:
        """Actors are named, so `ray list actors` (or a test) can find them: catneuron-<session>-<kind>-<i>-<n>."""
        return f"catneuron-{self.session}-{kind}-{index}-{incarnation}"

    def fit(self, steps: int | None, max_seconds: float | None = None, progress: bool = True) -> TrainResult:
        """Train until `steps` steps in all (one step: one replica's minibatch; None: until `max_seconds`), as
        Trainer.fit does: the same bookkeeping (catneuron.train.loop), the checkpoint assembled from the shards.

        A stop signal (Ctrl-C, SIGTERM, SIGHUP) ends the loop; the checkpoint is written from the shards, then
        Interrupted is raised. It is taken after Ray starts, in place of Ray's own handler (a native dump)."""
        t = self.trainer
        t.run.mkdir(parents=True, exist_ok=True)  # Ray's own messages go to a file in it from the start
        with ray_session(self.options.address, t.run / RAY_LOG):
            try:
                with Session(t, steps, max_seconds, progress, save=self.save, device=self.options.device) as session:
                    self._start()
                    self._loop(session)
                    if t.watch and session.signum is None:
                        self._watch(session.images, final=True)
            except HeadLost as e:
                self._head_lost(e)
            finally:
                self._stop()
        if self.failure is not None:
            raise UserError(f"{self.failure}; stopped at step {t.step}: checkpoint {runs.checkpoint_path(t.run)}")
        return session.result()

    def _start(self) -> None:
        """The shards (each holding its rows before the first fetch), the replicas, the watch's thread."""
        import ray

        ps_dir = self.trainer.run / PS_DIR
        ps_dir.mkdir(exist_ok=True)
        for old in ps_dir.glob("shard-*.safetensors"):
            old.unlink()  # the checkpoint is where a new session starts from
        self.cpus, self.threads = self._replica_resources()
        addresses = node_addresses()
        nodes = sorted(addresses, key=lambda node: addresses[node])
        shards, loaded = zip(*(self._start_shard(k, nodes[k % len(nodes)])
                               for k in range(len(self.shard_map.pieces))), strict=True)
        self.shards = list(shards)
        self.shard_restarts = ShardRestarts(self.shards, say)
        self.head = HeadWatch(ray.get_runtime_context().gcs_address)
        ray.get(list(loaded))  # every shard holds its rows before the first fetch
        self.source = ray.put(self.trainer.source)
        self.replicas = {i: self._start_replica(i) for i in range(self.options.replicas)}
        self.scanner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catneuron-watch")

    def _stop(self) -> None:
        """No watch thread outlives the run; a Ray instance that outlives it gets its CPUs back."""
        import ray

        if self.scanner is not None:
            self.scanner.shutdown(wait=True, cancel_futures=True)
        self.scanning = None
        for replica in self.replicas.values():
            replica.kill()
        for shard in self.shards:
            ray.kill(shard)

    def _head_lost(self, error: HeadLost) -> None:
        """One line, and the process ends at once: Ray's core cannot be shut down without its head (it would wait
        a minute, printing), and the checkpoint on disk (written whole, then renamed) is where `--resume` goes on."""
        t = self.trainer
        path = runs.checkpoint_path(t.run)
        saved = (f"the checkpoint {path}" + (f" holds step {t.saved_step}" if t.saved_step is not None else "")
                 if path.is_file() else "no checkpoint yet")
        say(f"{error}: stopped at step {t.step}; {saved}; --resume on a new cluster goes on from it")
        sys.stderr.flush()
        os._exit(1)

    def _start_shard(self, k: int, node: str) -> tuple:
        """Shard k asked for on `node` (round robin over the nodes: K links and memories, not one), softly, so that
        Ray can restart it elsewhere when that node is lost. Ray 2.60 takes it as a hint (docs/distributed.md)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        t = self.trainer
        params = list(t.network.parameters())
        state = {}
        for key, value in t.optimizer.state[params[0]].items():
            values = [t.optimizer.state[p][key] for p in params]
            if value.shape == params[0].shape:
                state[key] = self.shard_map.gather(values, k)
            else:  # a per-tensor count (Adagrad's step): the same for all of them
                state[key] = value.detach().cpu().numpy().copy()
        actor = ray.remote(ParameterShard).options(
            name=self.actor_name("ps", k), num_cpus=0, max_restarts=-1, max_task_retries=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True))
        path = t.run.resolve() / PS_DIR / snapshot_name(k, len(self.shard_map.pieces))
        shard = actor.remote(t.config, self.shard_map.pieces[k], str(path), self.options.snapshot_seconds)
        return shard, shard.load.remote(self.shard_map.gather(params, k), state)  # type: ignore[attr-defined]

    def _replica_resources(self) -> tuple[float, int]:
        """CPUs per process (a fair share: total / (replicas x ranks per replica), at most one node's) and torch
        threads to match. A replica needs one CPU; its ranks may share it. On CUDA each process needs a GPU."""
        import ray

        o = self.options
        resources = ray.cluster_resources()
        total = resources.get("CPU", 1.0)
        largest = max(node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"])
        if o.replicas > total:
            raise UserError(f"--replicas {o.replicas}: the Ray cluster has {total:g} CPU(s), and each "
                            f"replica needs one; use at most {int(total)} replicas")
        gpus = int(resources.get("GPU", 0))
        if o.replicas * o.ranks * gpus_per_rank(o.device) > gpus:
            raise UserError(f"--device {o.device}: --replicas {o.replicas} of --partitions {o.partitions[0]}x"
                            f"{o.partitions[1]} need {o.replicas * o.ranks} GPUs (one per process), the Ray cluster "
                            f"has {gpus}")
        cpus = math.floor(min(total / (o.replicas * o.ranks), largest) * 1e4) / 1e4  # Ray's resource precision
        return cpus, max(1, int(cpus))

    def _start_replica(self, i: int):
        import ray

        start = self.base_step if hasattr(self.trainer.source, "split") else self.positions[i]
        self.positions[i] = start
        o, name = self.options, self.actor_name("replica", i, self.incarnations[i])
        if o.ranks > 1:
            return start_ranks(name, self.trainer.config, self.source, i, o.replicas, start, o.partitions,
                               self.shards, self.shard_map,  # type: ignore[arg-type]  # BlockShards under a grid
                               o.fetch_every, o.push_every, self.cpus, self.threads,
                               local=o.address is None, device=o.device)
        actor = ray.remote(Replica).options(name=name, num_cpus=self.cpus, num_gpus=gpus_per_rank(o.device),
                                            max_restarts=0, scheduling_strategy="SPREAD")
        return ReplicaRanks([actor.remote(self.trainer.config, self.source, i, o.replicas, start, self.shards,
                                          self.shard_map.pieces, o.fetch_every, o.push_every, self.threads,
                                          o.device)])

    def _replica_died(self, i: int, error: Exception) -> None:
        """Replace a dead replica after a backoff (1 s, 2 s, ...), drop it, or stop the run, per the policy;
        a replica that dies DEATHS times within DEATH_WINDOW seconds stops the run with its error."""
        del self.replicas[i]
        self.placements.forget(i)
        if i in self.lost_at and NEVER_RAN in str(error):
            # A replacement Ray put on a node that was lost before Ray knew: no new death, placed again at once.
            self.restarts[i] = time.monotonic()
            return
        reason = self.stalled.pop(i, None) or death_reason(error)
        now, policy = time.monotonic(), self.options.on_failure
        deaths = self.deaths[i]
        deaths.append(now)
        while deaths and now - deaths[0] > DEATH_WINDOW:
            deaths.popleft()
        if policy == "stop":
            self.failure = f"replica {i} died ({reason})"
        elif policy == "replace" and len(deaths) >= DEATHS:
            self.failure = f"replica {i} died {len(deaths)} times within {DEATH_WINDOW:g} s ({reason})"
        elif policy == "replace":
            delay = 2.0 ** (len(deaths) - 1)
            self.restarts[i] = now + delay
            self.lost_at.setdefault(i, now)
            say(f"replica {i} died ({reason}): replaced in {delay:g} s")
        elif self.replicas:
            say(f"replica {i} died ({reason}): going on with {len(self.replicas)} replica(s)")
        else:
            self.failure = f"every replica died (the last: replica {i}, {reason})"

    def _restart_due(self, session: Session) -> None:
        """Start the replacements whose backoff is over, and give them work."""
        due = [i for i, when in self.restarts.items() if when <= time.monotonic()]
        if due and not self.head.answers():
            return  # starting an actor would wait for the head
        for i in due:
            del self.restarts[i]
            self._replace(i)
            self._grant(i, session)

    def _replace(self, i: int) -> None:
        """A new incarnation of replica i, wherever Ray finds room for it: on a cluster that lost a node, one
        with the CPUs (GPUs) it needs free; until one has, it waits, and `_recover` says so."""
        self.incarnations[i] += 1
        self.replicas[i] = self._start_replica(i)
        need = {"CPU": self.cpus} | ({"GPU": 1.0} if gpus_per_rank(self.options.device) else {})
        self.placements.started(i, self.replicas[i].actors, need)

    def _recover(self, busy: set[int]) -> int:
        """Once a loop: note replacements placed (or say what they wait for), shards Ray restarted (and the pushes
        they lost), and kill the replicas whose chunk is stuck (their death replaces them); returns how many
        replicas wait to be placed."""
        import ray

        self.head.check()
        waiting_before = set(self.placements.waiting)
        waiting = self.placements.check()
        now = time.monotonic()
        for i in waiting_before - set(self.placements.waiting):
            if i in self.replicas:
                self.replicas[i].since = now  # its chunk starts now
        if self.shard_restarts is not None:
            self.shard_restarts.check()
        for i in busy:
            replica = self.replicas.get(i)
            if replica is None or self.placements.placing(i) or i in self.stalled:
                continue
            if now - replica.since > self.options.stall_seconds:
                self.stalled[i] = f"stuck: no chunk back in {self.options.stall_seconds:g} s"
                for actor in replica.actors:
                    ray.kill(actor)  # its chunk fails, and the loop replaces it as a dead replica
        return waiting

    # -- the driver: wait for a chunk, record it, give that replica the next --------------------------------------

    def _loop(self, session: Session) -> None:
        """Ray's asynchronous parameter-server driver: wait for any replica's chunk, pop it, resubmit."""
        for i in self.replicas:
            self._grant(i, session)
        while self._working(session):
            self._restart_due(session)
            self.waiting = self._recover(set(self.chunks))
            done = self._next_chunk()
            if done is not None:
                self._record(session, *done)
                self._grant(done[0], session)

    def _working(self, session: Session) -> bool:
        """Chunks out or replacements to come, no stop signal, no failure that stops the run."""
        t = self.trainer
        return ((bool(self.pending) or (bool(self.restarts) and t.step < session.steps))
                and not session.signalled() and self.failure is None)

    def _grant(self, i: int, session: Session) -> None:
        """Give replica i its next chunk: its share of the steps left, unless none are left or time is up. The
        replacements still to start have their shares kept: a survivor granted while one is in its backoff would
        otherwise take every step left, and the replacement, started, would find none and idle (issue 22)."""
        free = session.steps - self.trainer.step - self.granted
        if free <= 0 or session.time_up():
            return
        n = -(-free // (len(self.replicas) + len(self.restarts)))
        refs = self.replicas[i].work(n, self.options.chunk_seconds)
        self.pending.update(dict.fromkeys(refs, i))
        self.chunks[i] = (refs, n)
        self.granted += n

    def _next_chunk(self) -> tuple[int, dict] | None:
        """The next replica to finish its chunk, and its report; None while none has (or one died)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        if not self.pending:
            time.sleep(0.1)
            return None
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
        if not ready:
            return None
        i = self.pending.pop(ready[0])
        refs, n = self.chunks[i]
        try:
            ray.get(ready[0])
        except (RayActorError, RayTaskError) as e:  # a dead actor, or an exception in its work
            self._lost(i, e)
            return None
        if any(ref in self.pending for ref in refs):
            return None  # the replica's other ranks are still at it
        del self.chunks[i]
        self.granted -= n
        return i, merge_reports(ray.get(refs))

    def _lost(self, i: int, error: Exception) -> None:
        """A rank of replica i died or failed: its replica's chunk is lost, the replica handled by the policy."""
        refs, n = self.chunks.pop(i)
        for ref in refs:  # a dead rank takes its replica down: its ranks' chunks are lost
            self.pending.pop(ref, None)
        self.granted -= n
        self.rates.pop(i, None)
        cause = _death_among(refs, error)  # before the kill: its peers' chunks fail too
        self.replicas[i].kill()
        self._replica_died(i, cause)

    def _record(self, session: Session, i: int, report: dict) -> None:
        """Replica i's chunk, step by step through the session's bookkeeping, with Downpour's own measures."""
        t = self.trainer
        if (lost := self.lost_at.pop(i, None)) is not None:  # the run says that what it lost works again, and where
            say(f"replica {i} steps again on {node_of(self.replicas[i].actors[0])}, "
                f"{time.monotonic() - lost:.0f} s after it was lost")
        done = len(report["terms"])
        self.positions[i] += done
        self.rates[i] = done / max(report["seconds"], 1e-9)
        self.moved["fetched"] += report["fetched_bytes"]
        self.moved["pushed"] += report["pushed_bytes"]
        stale = report["staleness"]
        stats: dict[str, object] = dict(session.rates(t.step + done))
        images = (t.step + done - session.start_step) * t.config.train.batch_size
        stats |= {"replicas": len(self.replicas) - self.waiting, "replicas_waiting": self.waiting,
                  "shard_pushes_lost": self.shard_restarts.lost if self.shard_restarts else 0,
                  "replica_steps_per_s": {str(k): self.rates[k] for k in sorted(self.rates)},
                  "staleness_mean": float(np.mean(stale)) if stale else 0.0,
                  "staleness_max": int(max(stale, default=0)),
                  "fetched_bytes": self.moved["fetched"], "pushed_bytes": self.moved["pushed"],
                  "bytes_per_image": (self.moved["fetched"] + self.moved["pushed"]) / max(images, 1)}
        for terms in report["terms"]:
            check_finite(terms, t.step + 1)
            t.step += 1
            session.stepped(terms, stats)
        if t.watch:
            self._watch(session.images)
        session.show(self._shown(session.last))

    def _watch(self, images: int, final: bool = False) -> None:
        """Scan a snapshot of the shards' parameters in a thread of the driver while the replicas go on; log the
        scan once it is done, start the next when due. `final`: wait for it, and scan the end of the run."""
        watch, scanner = self.trainer.watch, self.scanner
        assert isinstance(watch, Watch) and scanner is not None, "called only while a watched run fits"
        if self.scanning is not None and (final or self.scanning[0].done()):
            future, network = self.scanning
            watch.record(future.result(), network)
            self.scanning = None
        if final:
            watch.ensure(self._snapshot(), images, self.trainer.step)
        elif self.scanning is None and watch.due(images):
            network = self._snapshot()
            self.scanning = (scanner.submit(watch.scan, network, images, self.trainer.step), network)

    def _snapshot(self) -> Network:
        """The network as the shards hold it now."""
        import ray

        network = Network(self.trainer.config.model)
        params = list(network.parameters())
        for k, (_, flat) in enumerate(ray.get([shard.fetch.remote() for shard in self.shards])):
            self.shard_map.scatter(flat, k, params)
        return network.eval()

    @staticmethod
    def _shown(last: dict) -> dict[str, float]:
        """Loss, staleness, traffic per image and each replica's step rate (the slowest and fastest beyond 4)."""
        rates = last["replica_steps_per_s"]
        shown = {"loss": last["loss"], "stale": last["staleness_mean"], "KB/img": last["bytes_per_image"] / 1024}
        if last["replicas_waiting"]:
            shown["waiting"] = last["replicas_waiting"]
        if len(rates) <= 4:
            return shown | {f"r{k} st/s": v for k, v in rates.items()}
        return shown | {"min st/s": min(rates.values()), "max st/s": max(rates.values())}

    def save(self) -> None:
        """Assemble the shards' rows into the Trainer's network and optimizer, and write its checkpoint."""
        import ray

        t = self.trainer
        states = ray.get([shard.state.remote() for shard in self.shards])
        params = list(t.network.parameters())
        for k, state in enumerate(states):
            self.shard_map.scatter(state["param"], k, params)
        for key, value in states[0]["optim"].items():
            if value.ndim == 1:
                targets = [t.optimizer.state[p].setdefault(key, torch.zeros_like(p)) for p in params]
                for k, state in enumerate(states):
                    self.shard_map.scatter(state["optim"][key], k, targets)
            else:  # per-tensor counts: the most any shard has seen
                count = torch.tensor(max(s["optim"][key] for s in states))
                for p in params:
                    t.optimizer.state[p][key] = count.clone()
        self.shard_states = [{"version": s["version"], "restored_from": s["restored_from"]} for s in states]
        o = self.options
        extra = {"replica_steps": self.positions,
                 "downpour": {"replicas": o.replicas, "ps_shards": o.ps_shards, "fetch_every": o.fetch_every,
                              "push_every": o.push_every}}
        if o.ranks > 1:
            extra["partitions"] = f"{o.partitions[0]}x{o.partitions[1]}"
        t.save(extra)  # the trainer's guarded save: never weights that are not finite
