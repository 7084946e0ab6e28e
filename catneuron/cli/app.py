"""The typer application every sub-command registers on."""

import typer

app = typer.Typer(
    name="catneuron",
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
