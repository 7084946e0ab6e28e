"""The command itself: `--help` without importing the commands, `--version`, every command reachable."""

import inspect
import subprocess
import sys
from importlib.metadata import version

from clirun import run

import catneuron
from catneuron.cli.app import COMMANDS, LazyGroup, app


def test_help_lists_every_command_without_importing_torch():
    probe = ("import sys; from catneuron.cli import main; sys.argv = ['catneuron', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('TORCH' if 'torch' in sys.modules else 'LIGHT')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("LIGHT")
    for name in COMMANDS:
        assert f" {name} " in out


def test_the_list_says_what_each_command_says_of_itself():
    group = LazyGroup(name="catneuron")
    for name, (_, line) in COMMANDS.items():
        command = group.get_command(None, name)
        assert " ".join(inspect.getdoc(command.callback).split()).startswith(line), name
    assert {c.callback.__name__ for c in app.registered_commands} == set(COMMANDS)


def test_version(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"catneuron {version('catneuron')}" == f"catneuron {catneuron.__version__}"
