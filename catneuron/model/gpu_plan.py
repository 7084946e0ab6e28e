"""A GPU plan read before renting one: a training step measured on fake CUDA tensors (catneuron.model.fake_cuda).

The step is the trainer's (forward, objective, backward, single-tensor Adagrad, weight normalization) on a fake
device: torch's MemTracker gives its peak device memory, FlopCounterMode its FLOPs (the locally connected products
through their registered formulas). Peak memory is affine in the batch, so two batch sizes give the largest batch
that fits. `python -m catneuron.model.gpu_plan PRESET_OR_YAML` prints the measurement as JSON, in a process started
with the fake device; `plan` starts it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import torch

from catneuron.errors import UserError

# Dense peak TFLOP/s of known GPUs (vendor datasheets, SXM parts): (FP32, TF32 tensor cores, BF16 tensor cores).
GPUS = {
    "H100": (67.0, 494.7, 989.4),
    "H200": (67.0, 494.7, 989.4),
    "A100": (19.5, 156.0, 312.0),
    "L40S": (91.6, 183.0, 362.0),
    "A10": (31.2, 62.5, 125.0),
}
PRECISION_COLUMN = {"float32": 0, "tf32": 1, "bf16": 2}


def peak_tflops(name: str, precision: str) -> float | None:
    """The dense peak of a GPU named like torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3"), or None."""
    for key, peaks in GPUS.items():
        if key in name.upper():
            return peaks[PRECISION_COLUMN[precision]]
    return None


def utilisation(images_per_s: float, flops_per_image: float, device: torch.device, precision: str) -> float | None:
    """Model FLOPs utilisation on a CUDA device, in percent: achieved FLOP/s over the GPU's dense peak for the
    products' precision (as nanoGPT reports it), or None off CUDA or on a GPU not in `GPUS`."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    peak = peak_tflops(torch.cuda.get_device_name(device), precision)
    return None if peak is None else 100 * images_per_s * flops_per_image / (peak * 1e12)


@dataclass(frozen=True)
class Step:
    batch: int
    peak_bytes: int
    flops: int


def measure(config, batch: int) -> Step:
    """One training step of `config`'s model on `batch` images, on fake CUDA tensors (needs the fake device)."""
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils.flop_counter import FlopCounterMode

    from catneuron.model.fake_cuda import fake_device
    from catneuron.model.network import Network

    m = config.model
    cuda = torch.device("cuda", 0)
    with fake_device(), cuda:
        network = Network(m)
        network.set_precision(config.train.precision)
        optimizer = torch.optim.Adagrad(network.parameters(), lr=config.train.lr, foreach=False)
        images = torch.rand(batch, m.channels, m.input_size, m.input_size)

        def step() -> None:
            network.loss(network(images)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            network.normalize_weights()

        tracker = MemTracker()
        tracker.track_external(network, optimizer)
        with tracker:
            step()
        peak = tracker.get_tracker_snapshot("peak")[cuda]["Total"]
        # apart: under MemTracker's mode the kernels' ops are traced into, and their formulas not used
        with FlopCounterMode(display=False) as flops:
            step()
    return Step(batch, int(peak), int(flops.get_total_flops()))


def largest_batch(config, memory_bytes: int, small: Step, large: Step) -> Step:
    """The largest batch whose step fits `memory_bytes`: estimated from the peaks at two batches (affine once the
    activations dominate), then measured, and lowered by a tenth until the measured step fits (fake steps cost the
    same at any batch)."""
    per_image = max((large.peak_bytes - small.peak_bytes) / (large.batch - small.batch), 1.0)
    batch = int(large.batch + (memory_bytes - large.peak_bytes) / per_image)
    while batch >= 1:
        step = measure(config, batch)
        if step.peak_bytes <= memory_bytes:
            return step
        batch = int(batch * 0.9)
    return Step(0, small.peak_bytes, 0)


def main(argv: list[str]) -> None:
    from catneuron.model import fake_cuda
    from catneuron.model.config import PRESETS, load

    spec, batch, memory_bytes = argv[0], int(argv[1]), int(argv[2])
    if not fake_cuda.active():
        raise SystemExit("catneuron.model.gpu_plan: started without the fake device (fake_cuda.environment())")
    config = PRESETS[spec] if spec in PRESETS else load(spec)
    small, large = measure(config, batch), measure(config, 64 * batch)
    json.dump([small.__dict__, largest_batch(config, memory_bytes, small, large).__dict__], sys.stdout)


@dataclass(frozen=True)
class Plan:
    step: Step  # at the configured batch
    largest: Step  # the largest batch that fits (batch 0: none does)

    @property
    def flops_per_image(self) -> float:
        return self.step.flops / self.step.batch


def plan(spec: str, batch: int, memory_bytes: int) -> Plan:
    """Measure `spec`'s (a preset or a YAML file) training step at `batch` images, and the largest batch that fits
    `memory_bytes`, in a fresh process on the fake device."""
    from catneuron.model import fake_cuda

    try:
        done = fake_cuda.run(["-m", "catneuron.model.gpu_plan", spec, str(batch), str(memory_bytes)])
    except (OSError, fake_cuda.subprocess.SubprocessError) as e:
        raise OSError(f"the fake CUDA device could not be started: {e}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"measuring a training step on the fake CUDA device failed: {last}")
    step, largest = (Step(**row) for row in json.loads(done.stdout))
    return Plan(step, largest)


if __name__ == "__main__":
    main(sys.argv[1:])
