"""What `import catneuron` does to the process: OpenMP's idle threads sleep, unless the user chose otherwise."""

import os
import subprocess
import sys

import pytest

PROBE = "import os, catneuron, torch; print(os.environ['OMP_WAIT_POLICY'])"


def policy(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_import_makes_idle_openmp_threads_sleep_unless_the_user_set_a_policy():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert policy(env) == "PASSIVE"
    assert policy(env | {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_the_namespace_is_what_the_readme_documents():
    code = ("import catneuron, importlib.metadata as m; print(dir(catneuron)); "
            "print(catneuron.__version__ == m.version('catneuron')); "
            "print(issubclass(catneuron.UserError, ValueError))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['UserError', '__version__', 'features', 'model']"
    assert out[1:3] == ["True", "True"]
