"""The typer application every sub-command registers on."""

import typer

app = typer.Typer(
    name="catneuron",
    help="Learn, find and prove class-selective neurons (Le et al. 2012, the 'cat neuron' paper).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
