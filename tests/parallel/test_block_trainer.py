"""Training with --partitions: resumable across grids (2x2 -> 1x1 -> 1x2 equals one uninterrupted 1x1 run),
a killed rank stops the run with one line and an intact checkpoint, and nothing leaves loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from catneuron.cli import main
from catneuron.data.sources import open_source
from catneuron.model.config import PRESETS, replace
from catneuron.parallel.launch import run_ranks
from catneuron.parallel.trainer import BlockTrainer, ModelParallel
from catneuron.store import checkpoint, runs
from catneuron.train.trainer import Trainer

pytestmark = pytest.mark.slow  # spawned ranks: each imports torch

CONFIG = replace(PRESETS["tiny"], train={"lr": 0.01, "log_every": 1, "checkpoint_every": 1000})


def _losses(run: Path) -> list[float]:
    return [row["loss"] for row in runs.read_metrics(run)]


def test_resume_across_grids_equals_one_run(tmp_path):
    source = open_source("embedded", 16, 1)
    Trainer(CONFIG, source, tmp_path / "straight", data_spec="embedded").fit(6, progress=False)

    run = tmp_path / "mixed"
    assert ModelParallel(CONFIG, "embedded", run, (2, 2), threads=1, resume=False).fit(2).step == 2
    Trainer.resume(run, source).fit(4, progress=False)
    assert ModelParallel(CONFIG, "embedded", run, (1, 2), threads=1, resume=True).fit(6).step == 6

    straight, mixed = _losses(tmp_path / "straight"), _losses(run)
    assert [row["step"] for row in runs.read_metrics(run)] == list(range(1, 7))
    assert mixed == pytest.approx(straight, rel=1e-5)
    a, b = (checkpoint.load(runs.checkpoint_path(r)) for r in (tmp_path / "straight", run))
    assert b.extra["partitions"] == "1x2"
    for name, weight in a.model.items():
        torch.testing.assert_close(b.model[name], weight, rtol=1e-4, atol=1e-6)
    for name, value in a.optimizer["state"][0].items():
        torch.testing.assert_close(b.optimizer["state"][0][name], value, rtol=1e-4, atol=1e-6)


def _saved_steps(rank: int, world: int, run: str) -> list[int | None]:
    trainer = BlockTrainer(CONFIG, "embedded", run, (1, 2), rank)
    before = trainer.saved_step
    trainer.fit(3, progress=False)
    return [before, trainer.saved_step] if rank == 0 else None


def test_a_rank_knows_the_step_of_the_checkpoint_on_disk(tmp_path):
    """As the single-process trainer: the step a diverged run names as its last finite checkpoint."""
    assert run_ranks(_saved_steps, 2, (str(tmp_path / "run"),)) == [None, 3]
    assert checkpoint.load(runs.checkpoint_path(tmp_path / "run")).step == 3


def _ranks_of(parent: int) -> list[int]:
    """The spawned rank processes of `parent` (its children running multiprocessing's spawn_main)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def launch_1x2(run: Path) -> subprocess.Popen:
    """`catneuron train --partitions 1x2` on `tiny` into `run`, in a process of its own (a launcher and two ranks)."""
    command = [sys.executable, "-c", "from catneuron.cli import main; main()", "train", "--data", "embedded",
               "--preset", "tiny", "--partitions", "1x2", "--steps", "100000", "--out", str(run)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | {
        "PYTHONPATH": str(Path(__file__).parents[2])})


def test_a_killed_rank_stops_the_run_with_one_line_and_an_intact_checkpoint(tmp_path):
    run = tmp_path / "run"
    process = launch_1x2(run)
    try:
        deadline = time.monotonic() + 120
        while not runs.checkpoint_path(run).is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        ranks = _ranks_of(process.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    text = stderr.decode()
    lines = [line for line in text.splitlines() if not line.startswith("step ")]  # the progress line's updates
    assert process.returncode == 2, text
    assert len(lines) == 1 and "rank 1 of 2 died (SIGKILL)" in lines[0], lines
    assert "is intact: --resume goes on from it" in lines[0]
    kept = checkpoint.load(runs.checkpoint_path(run))
    assert kept.step % PRESETS["tiny"].train.checkpoint_every == 0 and kept.step > 0
    resumed = Trainer.resume(run, open_source("embedded", 16, 1))
    assert resumed.fit(kept.step + 2, progress=False).step == kept.step + 2
    assert json.loads((run / runs.CONFIG).read_text())["data"] == "embedded"


ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')


def test_a_local_run_binds_and_connects_only_on_loopback(tmp_path, isolate):
    """`catneuron train --partitions 1x2` under strace (in a network namespace of its own where one can be
    made): every address any of its processes binds, connects or sends to is loopback."""
    trace = tmp_path / "trace.txt"
    command = [*isolate, "strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=bind,connect,sendto,sendmsg",
               "-o", str(trace), sys.executable, "-c", "from catneuron.cli import main; main()", "train",
               "--data", "embedded", "--preset", "tiny", "--partitions", "1x2", "--steps", "3",
               "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    addresses = {a or b for a, b in ADDRESS.findall(trace.read_text())}
    assert "127.0.0.1" in addresses, "strace saw no loopback socket: the check proves nothing"
    assert {a for a in addresses if not ipaddress.ip_address(a).is_loopback} == set()


def test_torchrun_on_two_nodes_of_their_own_addresses_equals_one_process(tmp_path):
    """Two nodes as on a cluster, in a network namespace of the test's own (tests/ray_cluster.py): each its own
    address on an interface of its own (127.0.0.3, .4), a torchrun agent on each (`--nnodes 2 --nproc-per-node 1
    --local-addr NODE`, c10d rendezvous at the first node's address) with `GLOO_SOCKET_IFNAME` naming its
    interface, each starting one rank of `train --partitions 1x2`. `ss` in the namespace shows each rank's gloo
    listening on its own node's address only, and the other rank connected to rank 0 at rank 0's node's address;
    the objectives equal the single-process trainer's within float32 rounding. Which agent's worker becomes rank 0
    is the rendezvous's choice; each node is given an --out of its own: only rank 0 reports and writes, and a fresh
    run needs no folder the nodes share (a resumed one does: every rank reads its rows)."""
    from ray_cluster import Namespace, Unavailable, children, gloo_on_the_nodes

    try:
        namespace = Namespace()
    except Unavailable as e:
        pytest.skip(f"no network namespace can be made here: {e}")
    script = tmp_path / "catneuron_cli.py"
    script.write_text("from catneuron.cli import main\nmain()\n")
    nodes = ["127.0.0.3", "127.0.0.4"]
    snapshots: list[tuple[list, list, dict[int, str]]] = []
    try:
        agents = [subprocess.Popen(namespace.command(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{nodes[0]}:29400", "--rdzv-id", "two-nodes",
             "--local-addr", ip, str(script), "train", "--data", "embedded", "--preset", "tiny", "--partitions",
             "1x2", "--steps", "40", "--out", str(tmp_path / ip / "run")]), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2]),
                                                       "GLOO_SOCKET_IFNAME": namespace.interface(ip)})
            for ip in nodes]

        def sample() -> None:
            while any(agent.poll() is None for agent in agents):
                workers = {pid: ip for agent, ip in zip(agents, nodes, strict=True)
                           for pid in children(agent.pid)[1:]}
                with contextlib.suppress(subprocess.CalledProcessError):
                    snapshots.append((namespace.sockets("listening"), namespace.sockets(), workers))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done = [agent.communicate(timeout=300) for agent in agents]
        sampler.join()
    finally:
        namespace.close()
    for agent, (_, err) in zip(agents, done, strict=True):
        assert agent.returncode == 0, err.decode()[-2000:]
    written = [ip for ip in nodes if list((tmp_path / ip / "run").glob("*"))]
    assert len(written) == 1, "exactly one node's run folder holds the run"
    leader = written[0]  # rank 0's node
    (out, err), (other_out, other_err) = done[nodes.index(leader)], done[1 - nodes.index(leader)]
    assert out.decode().count("training tiny") == 1 and "step 40/40" in err.decode()
    assert other_out.decode() == "" and "step" not in other_err.decode()  # the other rank reports nothing
    run = tmp_path / leader / "run"
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events.out.tfevents.")) == [
        "checkpoint.safetensors", "config.json", "metrics.jsonl", "provenance.json"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0's TensorBoard events only

    rank0 = [(listening, established, workers, next(pid for pid, ip in workers.items() if ip == leader))
             for listening, established, workers in snapshots if sorted(workers.values()) == nodes]
    assert any(gloo_on_the_nodes(*snapshot) for snapshot in rank0), rank0[-1:]
    single = Trainer(PRESETS["tiny"], open_source("embedded", 16, 1), tmp_path / "single", data_spec="embedded")
    single.fit(40, progress=False)
    ours = _losses(run)
    assert len(ours) == 8 and ours == pytest.approx(_losses(tmp_path / "single"), rel=1e-3)
    kept = checkpoint.load(runs.checkpoint_path(run))
    for name, weight in single.network.state_dict().items():
        torch.testing.assert_close(kept.model[name], weight, rtol=1e-4, atol=1e-6)


def test_more_ranks_than_gpus_is_refused_before_any_rank_starts(tmp_path, monkeypatch, capsys):
    """NCCL cannot put two ranks on one GPU: `--partitions 1x2 --device cuda` with one GPU visible (torch.cuda's
    counts set here: this machine has none) is one line, exit 2, and nothing in the run folder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(sys, "argv", ["catneuron", "train", "--data", "embedded", "--preset", "tiny", "--partitions",
                                      "1x2", "--device", "cuda", "--steps", "2", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().splitlines() == ["catneuron: error: --partitions 1x2 --device cuda: 2 ranks on this machine "
                                        "need 2 GPUs (one per rank: NCCL cannot share a GPU between ranks), 1 visible"]
    assert not list((tmp_path / "run").glob("*"))  # nothing written: no rank started


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_the_ranks_stop_with_their_launcher(tmp_path, stop):
    """A stop signal to the launcher of `train --partitions 1x2` (Ctrl-C, a scheduler's SIGTERM) saves the step
    every rank stopped at and says how to continue, as the single-process trainer does; a launcher killed outright
    takes its ranks with it within seconds (none goes on training into the run folder)."""
    run = tmp_path / "run"
    process = launch_1x2(run)
    try:
        deadline = time.monotonic() + 120
        while not runs.read_metrics(run) and time.monotonic() < deadline:
            time.sleep(0.2)
        ranks = _ranks_of(process.pid)
        assert len(ranks) == 2, ranks
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
        ended = time.monotonic()
        while any(Path(f"/proc/{rank}").exists() for rank in ranks) and time.monotonic() < ended + 10:
            time.sleep(0.1)
        outlived = time.monotonic() - ended
    finally:
        process.kill()
    assert outlived < 5, f"ranks outlived their launcher by {outlived:.1f} s"
    if stop == signal.SIGKILL:
        return
    text = stderr.decode()
    assert process.returncode == 128 + stop, text[-2000:]
    said = re.search(r"interrupted( by SIGTERM)? at step (\d+): checkpoint \S+; continue with `catneuron train "
                     r"--resume --out '.*run' --data 'embedded' --partitions 1x2`", text)
    assert said and "Traceback" not in text, text[-2000:]
    assert checkpoint.load(runs.checkpoint_path(run)).step == int(said.group(2)) > 0
