"""The typer application every sub-command registers on, loading each command's module only when it runs.

`catneuron --help` lists the commands from COMMANDS without importing them (their modules import torch,
scikit-learn and matplotlib: seconds); running a command imports its module, which registers it on `app`.
"""

import importlib

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_from_info

# name: (module, the opening of its docstring, for the list of commands)
COMMANDS = {
    "demo": ("catneuron.cli.demo", "Train on unlabeled embedded images, find the face neuron, print Table 1 "
                                   "against the paper."),
    "evaluate": ("catneuron.cli.evaluate", "Scan every neuron of every sublayer of every stage (20 thresholds, AUC) "
                                           "and the baselines."),
    "finetune": ("catneuron.cli.finetune", "Train one-vs-all logistic classifiers on the top stage, then fine-tune "
                                           "the whole network with them."),
    "info": ("catneuron.cli.info", "Print per-layer shapes, parameters and FLOPs per image, and the time 10M images "
                                   "would take at the rate last measured on this machine; allocates nothing."),
    "table": ("catneuron.cli.table", "Train the network, its no-LCN and sigmoid-autoencoder variants and the no-face "
                                     "control; scan them all."),
    "ingest": ("catneuron.cli.ingest", "Ingest videos (one random frame each) and images into WebDataset shards; "
                                       "resumes an interrupted run."),
    "invariance": ("catneuron.cli.invariance", "Mean response over a few images as they are scaled, shifted and "
                                               "rotated; CSV and PNG."),
    "report": ("catneuron.cli.report", "Write an HTML report of a run: config, training curves, Table 1 per concept, "
                                       "one page per neuron."),
    "train": ("catneuron.cli.train", "Train the network on unlabeled images."),
    "visualize": ("catneuron.cli.visualize", "Find x* = argmax f(x) subject to ||x||_2 = 1 for one neuron, and show "
                                             "it beside its top stimuli."),
}


class LazyGroup(TyperGroup):
    """The commands of COMMANDS, each built from its module when it is invoked (or its own --help shown)."""

    listing = False  # while the group's help is written: the commands' one-line help, no import

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        module, line = COMMANDS[name]
        if self.listing:
            return TyperCommand(name, help=line)
        importlib.import_module(module)
        info = next(c for c in app.registered_commands if c.callback is not None and c.callback.__name__ == name)
        return get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                     rich_markup_mode=app.rich_markup_mode)

    def format_help(self, ctx, formatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    name="catneuron",
    cls=LazyGroup,
    help="Learn, find and prove class-selective neurons (Le et al. 2012, the 'cat neuron' paper).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def show_version(value: bool) -> None:
    if value:
        from catneuron.version import catneuron_version

        print(f"catneuron {catneuron_version()}")
        raise typer.Exit()


@app.callback()
def options(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                         help="Print catneuron's version and exit.")) -> None:
    pass
