"""The private local Ray requires a token: a second client on this machine without it is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from catneuron.downpour import ray_env  # noqa: E402

pytestmark = pytest.mark.slow
CLIENT = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); print('answer', ray.get(ray.put(42)))"


def client(address: str, home: Path, **auth: str) -> subprocess.CompletedProcess:
    """Another process of this machine connecting to `address`, with only the Ray auth settings given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(home)} | auth
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # two tries, not Ray's twenty
    return subprocess.run([sys.executable, "-c", CLIENT, address], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_client_without_the_token_is_refused(private_ray, tmp_path):
    address = ray.get_runtime_context().gcs_address
    assert address.startswith(ray_env.LOOPBACK)
    refused = client(address, tmp_path, RAY_AUTH_MODE="disabled")
    assert refused.returncode != 0 and "answer" not in refused.stdout
    assert "Authentication token is missing or incorrect" in refused.stderr
    wrong = client(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
    assert wrong.returncode != 0 and "answer" not in wrong.stdout
    assert "Authentication token is missing or incorrect" in wrong.stderr
    admitted = client(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=ray_env._TOKEN)
    assert admitted.returncode == 0 and "answer 42" in admitted.stdout, admitted.stderr[-2000:]
    # The token is in no command line (which any user can read) and in no file under HOME.
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert ray_env._TOKEN.encode() not in cmdline.read_bytes()
        except OSError:
            continue
    assert not (tmp_path / ".ray").exists() and not (Path.home() / ".ray" / "auth_token").exists()
