"""`catneuron info`: per-layer shapes, parameters and FLOPs of a preset or config, without allocating weights."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from catneuron.cli.app import app
from catneuron.cli.options import resolve_config
from catneuron.model.budget import layer_rows, training_bytes, training_flops


@app.command()
def info(
    preset: str = typer.Option(None, help="Preset: tiny, small or paper (default small)."),
    config: str = typer.Option(None, help="A YAML config file."),
) -> None:
    """Print per-layer shapes, parameters and FLOPs per image; allocates nothing."""
    cfg = resolve_config(preset, config)
    table = Table(title=f"catneuron model: preset {cfg.preset}")
    for name in ("stage", "sublayer", "output shape", "parameters", "forward FLOPs/image"):
        table.add_column(name, justify="right" if name[0] in "pf" else "left")
    rows = layer_rows(cfg.model)
    for r in rows:
        table.add_row(str(r.stage), r.sublayer, r.shape, f"{r.parameters:,}", f"{r.flops:,}")
    table.add_row("all", "", "", f"{sum(r.parameters for r in rows):,}", f"{sum(r.flops for r in rows):,}")
    Console().print(table)
    m = cfg.model
    print(f"input {m.channels}x{m.input_size}x{m.input_size}; sparsity lambda {m.sparsity}; "
          f"LCN {'on' if m.lcn else 'off'}; training FLOPs/image {training_flops(m):,}; "
          f"training memory at least {training_bytes(m) / 2**30:,.2f} GiB (weights, gradients, optimizer)")
