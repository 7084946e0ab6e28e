"""Options shared by several sub-commands."""

from __future__ import annotations

from catneuron.errors import UserError
from catneuron.model import config as configs


def resolve_config(preset: str | None, config_file: str | None) -> configs.Config:
    """--preset and --config: a config file wins over the preset it names; both at once is an error."""
    if preset and config_file:
        raise UserError("--preset and --config: give one (a config file may name its base preset)")
    if config_file:
        return configs.load(config_file)
    return configs.preset(preset or "small")
