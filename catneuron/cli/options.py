"""Options shared by several sub-commands."""

from __future__ import annotations

from typing import cast

import typer

from catneuron.analysis.stimuli import check_neuron
from catneuron.cli import checks
from catneuron.errors import UserError
from catneuron.model import config as configs
from catneuron.model.network import Network, NeuronId


def resolve_config(preset: str | None, config_file: str | None) -> configs.Config:
    """--preset and --config: a config file wins over the preset it names; both at once is an error."""
    if preset and config_file:
        raise UserError("--preset and --config: give one (a config file may name its base preset)")
    if config_file:
        return configs.load(config_file)
    return configs.preset(preset or "small")


CHECKPOINT = typer.Option("last", "--checkpoint", help="Which weights: last (the run's checkpoint), best (the "
                          "watch's best trained point, checkpoint-best) or the path of a checkpoint file.")
DEVICE = typer.Option("cpu", help="cpu, cuda, cuda:N or auto.")
SEED = typer.Option(None, help="Training seed: the initial weights and the order of the training images (overrides "
                    "the config).")
PRECISION = typer.Option(None, help="float32, bf16 or tf32: the locally connected products' operands (bf16 "
                         "accumulates in float32; tf32: TF32 products on CUDA, float32 elsewhere; overrides the "
                         "config).")


def train_overrides(**flags: object) -> dict[str, object]:
    """The `train:` fields that flags given on the command line override (None: not given), --seed and
    --precision checked before any work starts."""
    if flags.get("seed") is not None:
        checks.at_least("--seed", cast(int, flags["seed"]), 0)  # numpy's generators refuse negative seeds
    precision = flags.get("precision")
    if precision is not None and precision not in configs.PRECISIONS:
        raise UserError(f"--precision {precision}: choose {' or '.join(configs.PRECISIONS)}")
    return {name: value for name, value in flags.items() if value is not None}


def parse_neuron(network: Network, text: str, flag: str = "--neuron") -> NeuronId:
    """A neuron id that `network` has (e.g. s3.pool.m2.y4.x5), or a UserError naming the flag."""
    try:
        neuron = NeuronId.parse(text)
        check_neuron(network, neuron)
    except ValueError as e:
        raise UserError(f"{flag} {text}: {e}") from None
    return neuron
