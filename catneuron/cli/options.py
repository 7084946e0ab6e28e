"""Options shared by several sub-commands."""

from __future__ import annotations

from catneuron.analysis.stimuli import check_neuron
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


def parse_neuron(network: Network, text: str, flag: str = "--neuron") -> NeuronId:
    """A neuron id that `network` has (e.g. s3.pool.m2.y4.x5), or a UserError naming the flag."""
    try:
        neuron = NeuronId.parse(text)
        check_neuron(network, neuron)
    except ValueError as e:
        raise UserError(f"{flag} {text}: {e}") from None
    return neuron
