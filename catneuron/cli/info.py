"""`catneuron info`: per-layer shapes, parameters and FLOPs of a preset or config, without allocating weights."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from catneuron.cli.app import app
from catneuron.cli.options import resolve_config
from catneuron.errors import UserError
from catneuron.model import gpu_plan
from catneuron.model.budget import layer_rows, training_bytes, training_flops
from catneuron.model.config import PRESETS
from catneuron.store import rates

PLANNED_IMAGES = 10_000_000  # the paper's YouTube frames
PLANNED_GPU, GPU_FRACTION = "H100", 0.25  # the goal: 10M paper images in an hour on one H100 (docs/scale.md)


@app.command()
def info(
    preset: str = typer.Option(None, help="Preset: tiny, small or paper (default small)."),
    config: str = typer.Option(None, help="A YAML config file."),
    device: str = typer.Option("cpu", help="cpu, or cuda: also a GPU plan measured on fake CUDA tensors."),
    gpu_memory: float = typer.Option(80.0, help="With --device cuda: the GPU's memory in GB (1e9 bytes)."),
) -> None:
    """Print per-layer shapes, parameters and FLOPs per image, and the time 10M images would take at the rate
    last measured on this machine; allocates nothing. With --device cuda, a training step's peak device memory,
    the largest batch that fits, FLOPs per image and the time for 10M images on a GPU, measured without one."""
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: choose cpu or cuda")
    if not gpu_memory > 0 or gpu_memory == float("inf"):
        raise UserError(f"--gpu-memory {gpu_memory}: must be a positive number of GB")
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
          f"training memory at least {training_bytes(m, cfg.train.batch_size) / 2**30:,.2f} GiB (weights, gradients, "
          f"optimizer, a batch's activations)")
    if cfg.preset in PRESETS and cfg.model == PRESETS[cfg.preset].model:
        print(planned_time(cfg.preset))
    if device == "cuda":
        print(gpu_plan_text(config or cfg.preset, cfg.train.batch_size, gpu_memory))


def gpu_plan_text(spec: str, batch: int, gpu_memory: float) -> str:
    """The GPU plan, measured on fake CUDA tensors (catneuron.model.gpu_plan), in a few lines."""
    plan = gpu_plan.plan(spec, batch, int(gpu_memory * 1e9))
    flops = plan.flops_per_image * PLANNED_IMAGES
    rate = GPU_FRACTION * gpu_plan.GPUS[PLANNED_GPU][0] * 1e12
    fits = (f"{plan.largest.batch:,} images ({plan.largest.peak_bytes / 2**30:,.1f} GiB)" if plan.largest.batch
            else "none: the weights, their gradients and the optimizer's sums alone do not fit")
    return "\n".join([
        "GPU plan (a training step measured on fake CUDA tensors: MemTracker, FlopCounterMode; no GPU used):",
        f"  peak device memory at batch {plan.step.batch:,}: {plan.step.peak_bytes / 2**30:,.1f} GiB",
        f"  largest batch within {gpu_memory:g} GB: {fits}",
        f"  training FLOPs per image: {plan.flops_per_image / 1e9:.4g} GFLOP",
        f"  {PLANNED_IMAGES / 1e6:.0f}M images: {flops:.2e} FLOP, {flops / rate / 3600:,.2f} h at "
        f"{GPU_FRACTION:.0%} of an {PLANNED_GPU}'s FP32 peak ({rate / 1e12:.1f} TFLOP/s; a target, not a measurement)",
    ])


def planned_time(preset: str) -> str:
    """The time 10M images take at the preset's last measured rate, or how to measure one."""
    rate = rates.last(preset)
    if rate is None:
        return (f"{PLANNED_IMAGES / 1e6:.0f}M images: no rate measured on this machine yet "
                f"(python benchmarks/paper_step.py --preset {preset} records one in {rates.rates_path()})")
    return (f"{PLANNED_IMAGES / 1e6:.0f}M images: {rates.duration(PLANNED_IMAGES, rate)} at {rate.images_per_s:.1f} "
            f"images/s ({rate.precision}, {rate.threads} threads, {rate.processor}; measured {rate.date} by "
            f"benchmarks/paper_step.py)")
