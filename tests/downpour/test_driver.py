"""Downpour SGD on a local Ray: equal to the single-process trainer at N=K=P=G=1, learning with N=2 and K=2,
surviving a killed replica and a killed parameter shard, and a local run that touches nothing off loopback.

One private Ray serves every Ray test of the suite (`private_ray`, tests/conftest.py: it costs seconds and
~400 MiB to start); runs are a few dozen steps of the `tiny` preset.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from raykit import described, wait_gone

ray = pytest.importorskip("ray")

from catneuron.data.embedded import EmbeddedCorpus  # noqa: E402
from catneuron.data.shards import ShardSource  # noqa: E402
from catneuron.data.sources import ArraySource, open_source  # noqa: E402
from catneuron.downpour.driver import Downpour, DownpourOptions  # noqa: E402
from catneuron.errors import UserError  # noqa: E402
from catneuron.model.config import PRESETS, replace  # noqa: E402
from catneuron.parallel.trainer import ModelParallel  # noqa: E402
from catneuron.store import checkpoint, runs  # noqa: E402
from catneuron.train.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.slow
@pytest.fixture(scope="module")
def corpus() -> EmbeddedCorpus:
    return EmbeddedCorpus(size=16)


def tiny(**train):
    return replace(PRESETS["tiny"], train={"checkpoint_every": 1000, **train})


def objective(run: Path, images: torch.Tensor) -> float:
    net, _ = runs.load_network(run)
    with torch.no_grad():
        return float(net.loss(net(images)))


def objective_of(trainer: Trainer, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(trainer.network.loss(trainer.network(images)))


def kill_when(trainer: Downpour, name: str, at_step: int, restart: bool = False) -> threading.Thread:
    """Kill actor `name` of a running Downpour once the run has passed `at_step` (from another thread)."""
    def run() -> None:
        while trainer.trainer.step < at_step:
            time.sleep(0.05)
        ray.kill(ray.get_actor(name), no_restart=not restart)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_one_replica_one_shard_is_the_single_process_trainer(private_ray, corpus, tmp_path):
    # Weight normalization on: the shard's projection of its rows must be the network's own.
    config = replace(tiny(log_every=1), model={"weight_norm": "both"})
    single = Trainer(config, corpus, tmp_path / "single")
    single.fit(6, progress=False)
    downpour = Downpour(Trainer(config, corpus, tmp_path / "downpour"), DownpourOptions(replicas=1, ps_shards=1))
    downpour.fit(6, progress=False)

    a, b = runs.read_metrics(tmp_path / "single"), runs.read_metrics(tmp_path / "downpour")
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
        assert rb["staleness_max"] == 0
    ours = checkpoint.load(runs.checkpoint_path(tmp_path / "downpour"))
    for name, p in single.network.state_dict().items():
        torch.testing.assert_close(ours.model[name], p, msg=name)
    theirs = single.optimizer.state_dict()["state"]
    for index, state in theirs.items():
        for key, value in state.items():
            torch.testing.assert_close(ours.optimizer["state"][index][key], value, msg=f"{index}.{key}")
    # The single-process trainer resumes the Downpour checkpoint.
    assert Trainer.resume(tmp_path / "downpour", corpus).step == 6


def test_two_replicas_two_shards_lower_the_objective(private_ray, corpus, tmp_path):
    fixed = next(corpus.batches(200, seed=99))
    run = tmp_path / "run"
    downpour = Downpour(Trainer(tiny(), corpus, run),
                        DownpourOptions(replicas=2, ps_shards=2, fetch_every=2, push_every=2))
    before = objective_of(downpour.trainer, fixed)
    result = downpour.fit(80, progress=False)
    assert result.step == 80
    assert objective(run, fixed) < 0.8 * before
    last = runs.read_metrics(run)[-1]
    assert set(last["replica_steps_per_s"]) == {"0", "1"}
    assert last["fetched_bytes"] > 0 and last["pushed_bytes"] > 0 and last["staleness_max"] >= 0
    assert sorted(p.name for p in (run / "ps").iterdir()) == ["shard-0-of-2.safetensors", "shard-1-of-2.safetensors"]


@pytest.mark.parametrize("on_failure", ["replace", "drop"])
def test_a_killed_replica_does_not_stop_the_run(private_ray, corpus, tmp_path, caplog, on_failure):
    """Chunks of ~0.1 s: the survivor hands back several during the replacement's 1 s backoff, and the replacement
    must still find steps left to take and step (issue 22: it found none, and idled to the end)."""
    fixed = next(corpus.batches(200, seed=99))
    run = tmp_path / "run"
    downpour = Downpour(Trainer(tiny(), corpus, run),
                        DownpourOptions(replicas=2, on_failure=on_failure, chunk_seconds=0.1))
    before = objective_of(downpour.trainer, fixed)
    killer = kill_when(downpour, downpour.actor_name("replica", 0), at_step=60)
    result = downpour.fit(400, progress=False)  # long enough to outlast the 1 s backoff before a replacement
    killer.join(timeout=5)
    assert result.step == 400
    assert downpour.incarnations[0] == (1 if on_failure == "replace" else 0)
    assert len(downpour.replicas) == (2 if on_failure == "replace" else 1)
    assert ("replica 0 steps again on " in caplog.text) == (on_failure == "replace")
    assert objective(run, fixed) < 0.8 * before


def test_a_killed_shard_restarts_from_its_snapshot(private_ray, corpus, tmp_path):
    fixed = next(corpus.batches(200, seed=99))
    run = tmp_path / "run"
    downpour = Downpour(Trainer(tiny(), corpus, run), DownpourOptions(replicas=1, ps_shards=2, snapshot_seconds=0.05))
    before = objective_of(downpour.trainer, fixed)
    killer = kill_when(downpour, downpour.actor_name("ps", 1), at_step=20, restart=True)
    result = downpour.fit(80, progress=False)
    killer.join(timeout=5)
    assert result.step == 80
    assert downpour.shard_states[0]["restored_from"] is None
    assert downpour.shard_states[1]["restored_from"] > 0  # a snapshot taken during the run, not the initial one
    assert objective(run, fixed) < 0.8 * before


def _losses(run: Path) -> list[float]:
    return [row["loss"] for row in runs.read_metrics(run)]


def test_one_replica_of_1x2_blocks_is_the_model_parallel_trainer(private_ray, tmp_path):
    """N = K = P = G = 1 with 1x2 blocks: the non-Downpour 1x2 run bit for bit (the same block network, the same
    Adagrad element by element), and the single-process trainer within float32 rounding (the blocks sum the
    objective in another order)."""
    config = replace(tiny(log_every=1), model={"weight_norm": "both"})
    source = open_source("embedded", 16, 1)
    ModelParallel(config, "embedded", tmp_path / "blocks", (1, 2), threads=1, resume=False).fit(6)
    Trainer(config, source, tmp_path / "single", data_spec="embedded").fit(6, progress=False)
    run = tmp_path / "downpour"
    Downpour(Trainer(config, source, run, data_spec="embedded"),
             DownpourOptions(replicas=1, ps_shards=1, partitions=(1, 2))).fit(6, progress=False)

    assert _losses(run) == _losses(tmp_path / "blocks")
    assert _losses(run) == pytest.approx(_losses(tmp_path / "single"), rel=1e-5)
    assert {row["staleness_max"] for row in runs.read_metrics(run)} == {0}
    ours, blocks = (checkpoint.load(runs.checkpoint_path(r)) for r in (run, tmp_path / "blocks"))
    assert ours.extra["partitions"] == "1x2"
    for name, weight in blocks.model.items():
        assert torch.equal(ours.model[name], weight), name
    for index, state in blocks.optimizer["state"].items():
        for key, value in state.items():
            assert torch.equal(ours.optimizer["state"][index][key], value), f"{index}.{key}"
    assert Trainer.resume(run, source).step == 6


def test_two_replicas_of_1x2_blocks_lower_the_objective_meeting_as_on_a_cluster(private_ray, corpus, tmp_path):
    """With `--address` (here the Ray this module started) each replica's ranks meet at the TCP store their rank 0
    opens, as on a cluster, rather than through a local file; the driver's watch scans the blocks' shards."""
    from catneuron.analysis.emergence import subsample, watch_records
    from catneuron.train.watch import Watch, WatchOptions

    fixed = next(corpus.batches(200, seed=99))
    run = tmp_path / "run"
    trainer = Trainer(tiny(), corpus, run)
    trainer.watch = Watch([("faces", subsample(corpus.test_set(), 40))],
                          WatchOptions(every_images=200, budget=1.0, n_filters=50), say=lambda _: None)
    downpour = Downpour(trainer, DownpourOptions(
        replicas=2, fetch_every=2, push_every=2, partitions=(1, 2), address="cluster"))
    before = objective_of(downpour.trainer, fixed)
    result = downpour.fit(40, progress=False)
    assert result.step == 40
    assert objective(run, fixed) < 0.8 * before
    assert all(replica.folder is None for replica in downpour.replicas.values())  # no local rendezvous file
    last = runs.read_metrics(run)[-1]
    assert set(last["replica_steps_per_s"]) == {"0", "1"}
    assert last["fetched_bytes"] > 0 and last["pushed_bytes"] > 0
    assert sorted(p.name for p in (run / "ps").iterdir()) == ["shard-0-of-2.safetensors", "shard-1-of-2.safetensors"]
    images = [r["images"] for r in watch_records(runs.read_rows(run))]
    assert images[0] == 0 and images[-1] == 40 * 20 and len(images) >= 2


def test_a_killed_rank_takes_down_its_replica_which_is_rebuilt_from_the_shards(private_ray, corpus, tmp_path):
    """One replica of 1x2 blocks: the run can only finish if the replica rebuilt after its rank 1 was killed
    trains (its ranks meeting afresh); its rank 0 went down with rank 1, the shards stayed up."""
    fixed = next(corpus.batches(200, seed=99))
    run = tmp_path / "run"
    downpour = Downpour(Trainer(tiny(), corpus, run), DownpourOptions(replicas=1, partitions=(1, 2)))
    before = objective_of(downpour.trainer, fixed)
    seen: dict = {}

    def kill_rank() -> None:
        while downpour.trainer.step < 5:
            time.sleep(0.05)
        ray.kill(ray.get_actor(downpour.actor_name("replica", 0) + "-rank-1"))
        deadline = time.monotonic() + 60
        while downpour.incarnations[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            ray.get_actor(downpour.actor_name("replica", 0) + "-rank-0")
            seen["sibling"] = "alive"
        except ValueError:
            seen["sibling"] = "gone"
        seen["rebuilt_from"] = downpour.positions[0]

    killer = threading.Thread(target=kill_rank, daemon=True)
    killer.start()
    result = downpour.fit(25, progress=False)
    killer.join(timeout=5)
    assert result.step == 25
    assert downpour.incarnations == [1]
    assert seen["sibling"] == "gone"
    assert 5 <= seen["rebuilt_from"] < 25 and downpour.positions[0] == 25
    assert [s["restored_from"] for s in downpour.shard_states] == [None, None]
    assert objective(run, fixed) < 0.8 * before


def _connected_addresses(trace: str) -> set[str]:
    ipv4 = re.findall(r'inet_addr\("([^"]+)"\)', trace)
    ipv6 = re.findall(r'inet_pton\(AF_INET6, "([^"]+)"', trace)
    return set(ipv4) | set(ipv6)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _driver(root: int, marker: bytes) -> int:
    """The Python process under `root` (strace's child, not the shells on the way) running `marker`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        todo = [root]
        while todo:
            pid = todo.pop()
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv[0] == sys.executable.encode() and marker in argv:
                    return pid
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError("the training process did not start")


def test_a_local_run_touches_only_loopback_and_stops_cleanly_on_ctrl_c(tmp_path, isolate):
    """`catneuron train --replicas 2 --partitions 1x2` under strace (in a network namespace of its own where one can
    be made): every address any of its processes (the driver, Ray's, the shards, the replicas' ranks and their gloo
    groups) connects or sends to is in 127.0.0.0/8, no token lands in $HOME, Ctrl-C leaves a checkpoint, and no Ray
    process is left behind. Plain replicas (no --partitions) are the same Ray actors without the gloo groups."""
    home, run, trace = tmp_path / "home", tmp_path / "run", tmp_path / "trace.txt"
    home.mkdir()
    temp = tempfile.mkdtemp(prefix="cnray-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"HOME": str(home), "RAY_TMPDIR": temp}
    entry = "from catneuron.cli import main; main()"
    command = [*isolate, "strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,sendto,sendmsg",
               "-o", str(trace), sys.executable, "-c", entry,
               "train", "--data", "embedded", "--preset", "tiny", "--steps", "100000", "--replicas", "2",
               "--partitions", "1x2", "--out", str(run)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        driver = _driver(proc.pid, entry.encode())
        deadline = time.monotonic() + 240
        while not runs.read_metrics(run) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert runs.read_metrics(run), "no training step logged"
        os.kill(driver, signal.SIGINT)  # what Ctrl-C sends (Ray's own processes block it)
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no exit 120 s after Ctrl-C:\n" + proc.communicate()[0].decode()[-3000:])
        left = wait_gone(temp.encode())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 130, output.decode()[-2000:]
    ckpt = checkpoint.load(runs.checkpoint_path(run))
    assert ckpt.step >= runs.read_metrics(run)[-1]["step"]
    addresses = _connected_addresses(trace.read_text())
    assert addresses, "strace saw no connections: the check proves nothing"
    assert {a for a in addresses if not _is_loopback(a)} == set()
    assert not (home / ".ray").exists(), "Ray wrote under $HOME"
    assert not left, f"Ray processes left behind: {left}"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_the_driver_stops_on_sigterm_as_on_ctrl_c_and_ray_dies_with_it(tmp_path, stop):
    """SIGTERM (a scheduler's preemption) to a Downpour driver: a checkpoint, the resume command, exit 143, and
    none of Ray's native dump (`*** SIGTERM received`); kill -9: the private Ray dies with the driver."""
    run, temp = tmp_path / "run", tempfile.mkdtemp(prefix="cnray-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {
        "RAY_TMPDIR": temp, "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [sys.executable, "-c", "from catneuron.cli import main; main()", "train", "--data", "embedded",
               "--preset", "tiny", "--steps", "100000", "--replicas", "2", "--out", str(run)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not runs.read_metrics(run) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert runs.read_metrics(run), "no training step logged"
        proc.send_signal(stop)
        output = proc.communicate(timeout=120)[0].decode()
        left = wait_gone(temp.encode())
    finally:
        proc.kill()
        shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"Ray processes outlived the driver by 30 s: {described(left)}"
    if stop == signal.SIGKILL:
        return
    assert proc.returncode == 143 and "SIGTERM received" not in output, output[-2000:]
    said = re.search(r"interrupted by SIGTERM at step (\d+): checkpoint \S+; continue with `catneuron train --resume "
                     r"--out '.*run' --data 'embedded' --replicas 2`", output)
    assert said, output[-2000:]
    assert checkpoint.load(runs.checkpoint_path(run)).step == int(said.group(1)) > 0


def test_a_replica_that_always_dies_stops_the_run_with_its_error(private_ray, tmp_path, caplog):
    (tmp_path / "broken.tar").write_bytes(b"not a tar file" * 100)
    source = ShardSource([tmp_path / "broken.tar"], 16, 1, workers=0)
    downpour = Downpour(Trainer(tiny(), source, tmp_path / "run"), DownpourOptions(replicas=1))
    with pytest.raises(UserError, match=r"replica 0 died 3 times within 60 s \(.*no readable images\); stopped"):
        downpour.fit(50, progress=False)
    err = caplog.text
    assert "replaced in 1 s" in err and "replaced in 2 s" in err  # the backoff
    assert runs.checkpoint_path(tmp_path / "run").is_file()


def test_a_replica_whose_chunk_does_not_come_back_is_replaced_as_stuck(private_ray, corpus, tmp_path, caplog):
    """Chunks of ~3 s against a stall limit of 0.5 s: every chunk is 'stuck', its replica killed and replaced, and
    the third such death within a minute stops the run with the reason."""
    downpour = Downpour(Trainer(tiny(), corpus, tmp_path / "run"),
                        DownpourOptions(replicas=1, chunk_seconds=3.0, stall_seconds=0.5))
    with pytest.raises(UserError, match=r"replica 0 died 3 times within 60 s \(stuck: no chunk back in 0.5 s\)"):
        downpour.fit(100_000, progress=False)
    assert "replica 0 died (stuck: no chunk back in 0.5 s): replaced in 1 s" in caplog.text


def test_more_replicas_than_the_data_or_the_cluster_can_hold_are_refused(private_ray, corpus, tmp_path):
    two = ArraySource(np.zeros((2, 1, 16, 16), np.uint8), "folder two (2 images)")
    with pytest.raises(UserError, match=r"--replicas 3: folder two \(2 images\) has 2 image\(s\).*at most 2"):
        Downpour(Trainer(tiny(), two, tmp_path / "a"), DownpourOptions(replicas=3))
    with pytest.raises(UserError, match=r"--replicas 3: the Ray cluster has 2 CPU\(s\).*at most 2 replicas"):
        Downpour(Trainer(tiny(), corpus, tmp_path / "b"), DownpourOptions(replicas=3)).fit(5, progress=False)
    with pytest.raises(UserError, match="--on-replica-failure retry: choose replace, drop, stop"):
        DownpourOptions(on_failure="retry").validate()


def test_gpu_ranks_are_refused_where_the_cluster_has_fewer_gpus(private_ray, corpus, tmp_path):
    """On CUDA every rank asks Ray for a GPU of its own: this Ray has none, and a GPU named for all is refused."""
    cuda = torch.device("cuda")
    with pytest.raises(UserError, match=r"^--device cuda: --replicas 2 of --partitions 1x2 need 4 GPUs \(one per "
                                        r"process\), the Ray cluster has 0$"):
        Downpour(Trainer(tiny(), corpus, tmp_path / "a"),
                 DownpourOptions(replicas=2, partitions=(1, 2), device=cuda)).fit(5, progress=False)
    with pytest.raises(UserError, match=r"^--device cuda:1: each Downpour replica \(rank\) takes the GPU Ray gives"):
        Downpour(Trainer(tiny(), corpus, tmp_path / "b"), DownpourOptions(device=torch.device("cuda", 1)))


def test_the_first_death_stops_the_run_under_stop(private_ray, corpus, tmp_path):
    downpour = Downpour(Trainer(tiny(), corpus, tmp_path / "run"), DownpourOptions(replicas=2, on_failure="stop"))
    killer = kill_when(downpour, downpour.actor_name("replica", 1), at_step=10)
    with pytest.raises(UserError, match=r"replica 1 died \(.*\); stopped at step \d+: checkpoint"):
        downpour.fit(10_000, progress=False)
    killer.join(timeout=5)


def test_the_watch_under_two_replicas_logs_its_curve(private_ray, corpus, tmp_path):
    from catneuron.analysis.emergence import subsample, watch_records
    from catneuron.train.watch import Watch, WatchOptions, best_checkpoint_path

    trainer = Trainer(tiny(), corpus, tmp_path)
    trainer.watch = Watch([("faces", subsample(corpus.test_set(), 60))],
                          WatchOptions(every_images=20, budget=1.0, n_filters=100), say=lambda _: None)
    downpour = Downpour(trainer, DownpourOptions(replicas=2))
    downpour.fit(30, progress=False)
    images = [r["images"] for r in watch_records(runs.read_rows(tmp_path))]
    assert images[0] == 0 and images[-1] == 30 * 20 and len(images) >= 3 and images == sorted(set(images))
    assert checkpoint.load(best_checkpoint_path(tmp_path)).extra["watch"]["images"] in images
    assert not watch_threads()  # the scans' thread ends with the run


def watch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("catneuron-watch")]


def test_the_watch_thread_ends_when_a_scan_fails(private_ray, corpus, tmp_path):
    from catneuron.analysis.emergence import subsample
    from catneuron.train.watch import Watch, WatchOptions

    class Failing(Watch):
        def scan(self, network, images, step):
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("scan failed")
            return super().scan(network, images, step)

    trainer = Trainer(tiny(), corpus, tmp_path)
    trainer.watch = Failing([("faces", subsample(corpus.test_set(), 40))],
                            WatchOptions(every_images=20, budget=1.0, n_filters=50), say=lambda _: None)
    downpour = Downpour(trainer, DownpourOptions(replicas=2))
    with pytest.raises(RuntimeError, match="scan failed"):
        downpour.fit(30, progress=False)
    assert not watch_threads()
