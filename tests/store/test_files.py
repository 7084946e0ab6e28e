"""Atomic files: one mode for everything written, and a full disk leaves no temporary file and one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from catneuron.cli import main
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.store import checkpoint, files


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_and_other_files_get_one_mode(tmp_path, umask):
    before = os.umask(umask)
    try:
        checkpoint.save(tmp_path / "c.safetensors", PRESETS["tiny"], 1, Network(PRESETS["tiny"].model))
        files.write_json(tmp_path / "a.json", {"a": 1})
        files.write_atomic(tmp_path / "b.png", b"png")
    finally:
        os.umask(before)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(("c.safetensors", "a.json", "b.png"), 0o666 & ~umask)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(folder, leave: int) -> None:
    """Fill the file system of `folder` until `leave` bytes are free."""
    stat = os.statvfs(folder)
    (folder / "ballast").write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))


def test_a_full_disk_leaves_no_temporary_checkpoint(small_disk):
    fill(small_disk, 16 << 10)
    with pytest.raises(OSError) as info:
        checkpoint.save(small_disk / "c.safetensors", PRESETS["tiny"], 1, Network(PRESETS["tiny"].model),
                        extra_tensors={"pad": torch.zeros(64 << 10)})
    assert "No space left on device" in str(info.value)
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["catneuron", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_train_and_ingest_on_a_full_disk_say_one_line(monkeypatch, capsys, small_disk, image_folder, tmp_path):
    data = image_folder(tmp_path / "data", 30, 0, size=(64, 64))
    fill(small_disk, 8 << 10)
    code, err = run_cli(monkeypatch, capsys, "train", "--data", data, "--preset", "small", "--steps", "1",
                        "--out", small_disk / "run")
    last = err.splitlines()[-1]  # after the progress lines
    assert code == 1 and last.startswith("catneuron: error: ") and last.endswith("No space left on device")
    assert "Traceback" not in err
    code, err = run_cli(monkeypatch, capsys, "ingest", data, "--out", small_disk / "shards", "--census", "0",
                        "--no-detect-faces", "--workers", "1", "--size", "64")
    last = err.splitlines()[-1]
    assert code == 1 and last.startswith("catneuron: error: ") and last.endswith("No space left on device")
    leftovers = [p.name for p in small_disk.rglob(".*tmp-*")]
    assert leftovers == []
