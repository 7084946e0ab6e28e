"""`catneuron info`: per-layer shapes, parameters and FLOPs of a preset or config, without allocating weights."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from catneuron.cli.app import app
from catneuron.cli.options import resolve_config
from catneuron.model.budget import layer_rows, training_bytes, training_flops
from catneuron.model.config import PRESETS
from catneuron.store import rates

PLANNED_IMAGES = 10_000_000  # the paper's YouTube frames


@app.command()
def info(
    preset: str = typer.Option(None, help="Preset: tiny, small or paper (default small)."),
    config: str = typer.Option(None, help="A YAML config file."),
) -> None:
    """Print per-layer shapes, parameters and FLOPs per image, and the time 10M images would take at the rate
    last measured on this machine; allocates nothing."""
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
    if cfg.preset in PRESETS and cfg.model == PRESETS[cfg.preset].model:
        print(planned_time(cfg.preset))


def planned_time(preset: str) -> str:
    """The time 10M images take at the preset's last measured rate, or how to measure one."""
    rate = rates.last(preset)
    if rate is None:
        return (f"{PLANNED_IMAGES / 1e6:.0f}M images: no rate measured on this machine yet "
                f"(python benchmarks/paper_step.py --preset {preset} records one in {rates.rates_path()})")
    return (f"{PLANNED_IMAGES / 1e6:.0f}M images: {rates.duration(PLANNED_IMAGES, rate)} at {rate.images_per_s:.1f} "
            f"images/s ({rate.precision}, {rate.threads} threads, {rate.processor}; measured {rate.date} by "
            f"benchmarks/paper_step.py)")
