"""The optimal stimulus of a neuron: x* = argmax f(x) subject to ||x||_2 = 1 (Le et al. 2012, section 4.4).

Solved as the paper does, by projected gradient ascent with a backtracking (Armijo) line search,
from several random starts at once (a batch: every image goes through the network on its own, so
the starts do not interact). x is the network's input, (C, S, S). `Network.forward` standardizes
each image, so f(a x + b) = f(x) for a > 0: the norm constraint only fixes the scale, starts are
drawn with zero mean so the mean stays zero, and x* rescaled to [0, 1] for display gives the
network the same activation.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from catneuron.model.network import Network, NeuronId
from catneuron.progress import Progress
from catneuron.store import files

PATIENCE = 10
"""Iterations over which a start's gain is measured against its tolerance (`ascend`'s `ftol`)."""

Objective = Callable[[Tensor], Tensor]
"""Images (B, C, S, S) -> one value per image (B,), differentiable; e.g. `neuron_objective(net, id)`."""


def neuron_objective(network: Network, neuron: NeuronId) -> Objective:
    """The activation of one unit as an objective (the Lucent-style building block; combine freely)."""
    return lambda images: network.neuron(images, neuron)


def project(x: Tensor) -> Tensor:
    """Each row of a batch scaled onto the unit sphere."""
    norms = x.flatten(1).norm(dim=1).clamp_min(1e-12)
    return x / norms.view(-1, *([1] * (x.dim() - 1)))


@dataclass
class Convergence:
    """How one start ended: `reason` is `gradient` (projected gradient norm below tolerance), `stalled`
    (relative improvement over the last iterations below tolerance), `line search` (no step size increased
    f), `steps` (iteration budget spent) or `time` (time budget spent); the last two are not convergence.
    `step_size` is the one a further iteration would try first."""

    value: float
    initial_value: float
    iterations: int
    grad_norm: float
    step_size: float
    reason: str

    @property
    def converged(self) -> bool:
        return self.reason not in ("steps", "time")

    def to_dict(self) -> dict:
        return asdict(self) | {"converged": self.converged}


@dataclass
class Ascent:
    """The result of `ascend`: final points (B, ...), their values (B,), one Convergence per start, and
    the value of every start after each iteration, (iterations + 1, B), for inspection and tests."""

    x: Tensor
    values: Tensor
    starts: list[Convergence]
    history: Tensor

    @property
    def best(self) -> int:
        return int(self.values.argmax())


def _value_and_grad(objective: Objective, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        f = objective(x)
        (g,) = torch.autograd.grad(f.sum(), x)
    return f.detach(), g


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(dim=1)


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def ascend(objective: Objective, x0: Tensor, steps: int = 200, step_size: float = 1.0, armijo: float = 0.5,
           shrink: float = 0.5, max_backtracks: int = 30, gtol: float = 1e-5, ftol: float = 1e-6,
           patience: int = PATIENCE, max_seconds: float | None = None, progress: bool = False) -> Ascent:
    """Maximize `objective` over the unit sphere from each row of `x0`, by projected gradient ascent.

    Each iteration takes the gradient's component tangent to the sphere, g, and tries x(a) = P(x + a g)
    with a halved until the Armijo condition f(x(a)) >= f(x) + armijo * <g, x(a) - x> holds, so the
    value never decreases. Each start keeps its own step size: after a success, the next first try is the
    Barzilai-Borwein step <s, s> / <s, y> (s the last move, y the change of -g), which follows the local
    curvature (stage-3 units of the small preset converged in 100-250 iterations with it, not in 400 with
    plain doubling); where that curvature estimate is not positive, twice the last step. `armijo` = 0.5
    rejects steps past the maximum of a locally quadratic f (a small constant accepts overshoots that
    zig-zag across the optimum and crawl). A start stops when ||g|| <= gtol * max(1, |f|), when f gained
    less than ftol * max(1, |f|) over `patience` iterations (kinks, e.g. LCN's floor, keep ||g|| large
    at a maximum), or when no step size in `max_backtracks` halvings is accepted; every start still
    running stops after `steps` iterations or, checked after each iteration, `max_seconds`. `progress`
    shows the iteration, its rate, the best value and the starts still running on stderr.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    started = time.monotonic()
    bar = Progress(steps, "iteration", enabled=progress)
    x = project(x0.detach())
    f, grad = _value_and_grad(objective, x)
    batch = x.shape[0]
    alpha = torch.full((batch,), float(step_size), dtype=x.dtype, device=x.device)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(batch, dtype=torch.long)
    reasons = ["steps"] * batch
    initial, history = f.clone(), [f.clone()]
    g = grad - _rows(_dot(grad, x), x) * x
    gnorm = g.flatten(1).norm(dim=1)
    for i in torch.nonzero(gnorm <= gtol * f.abs().clamp_min(1.0)).flatten().tolist():
        active[i], reasons[i] = False, "gradient"
    done = 0
    for iteration in range(1, steps + 1):
        if not active.any():
            break
        done = iteration
        trial_x, trial_f, accepted, alpha = _line_search(objective, x, f, g, alpha, active, armijo, shrink,
                                                         max_backtracks)
        for i in torch.nonzero(active & ~accepted).flatten().tolist():
            active[i], reasons[i] = False, "line search"
        x_old, g_old = x, g
        x, f = trial_x, trial_f
        iterations += accepted.cpu().long()
        history.append(f.clone())
        _, grad = _value_and_grad(objective, x)
        g = grad - _rows(_dot(grad, x), x) * x
        s, y = x - x_old, g_old - g
        sy = _dot(s, y)
        bb = _dot(s, s) / sy.clamp_min(1e-30)
        alpha = torch.where(accepted, torch.where(sy > 0, bb, alpha / shrink), alpha)
        gnorm = g.flatten(1).norm(dim=1)
        scale = f.abs().clamp_min(1.0)
        gain = f - history[-patience - 1] if len(history) > patience else torch.full_like(f, math.inf)
        for i in torch.nonzero(accepted).flatten().tolist():
            if gnorm[i] <= gtol * scale[i]:
                active[i], reasons[i] = False, "gradient"
            elif gain[i] <= ftol * scale[i]:
                active[i], reasons[i] = False, "stalled"
        elapsed = time.monotonic() - started
        rate = iteration / max(elapsed, 1e-9)
        left = (steps - iteration) / rate
        bar.update(iteration, rate, "it", {"best f": float(f.max()), "running": int(active.sum())},
                   eta=left if max_seconds is None else min(left, max_seconds - elapsed))
        if max_seconds is not None and elapsed >= max_seconds:
            for i in torch.nonzero(active).flatten().tolist():
                active[i], reasons[i] = False, "time"
            break
    if done:
        bar.update(done, done / max(time.monotonic() - started, 1e-9), "it", {"best f": float(f.max())}, eta=0,
                   final=True)
    starts = [Convergence(float(f[i]), float(initial[i]), int(iterations[i]), float(gnorm[i]), float(alpha[i]),
                          reasons[i]) for i in range(batch)]
    return Ascent(x.detach(), f, starts, torch.stack(history))


def _line_search(objective: Objective, x: Tensor, f: Tensor, g: Tensor, alpha: Tensor, active: Tensor, armijo: float,
                 shrink: float, max_backtracks: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backtracking along the sphere for every active start at once: (new x, new f, which starts accepted a
    step, the step sizes after the halvings). A start that accepts none keeps its x and f."""
    accepted = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    trial_x, trial_f = x.clone(), f.clone()
    for _ in range(max_backtracks + 1):
        pending = active & ~accepted
        if not pending.any():
            break
        candidate = project(x + _rows(alpha, x) * g)
        with torch.no_grad():
            value = objective(candidate)
        ok = pending & (value >= f + armijo * _dot(g, candidate - x)) & torch.isfinite(value)
        trial_x[ok], trial_f[ok] = candidate[ok], value[ok]
        accepted |= ok
        alpha = torch.where(pending & ~ok, alpha * shrink, alpha)
    return trial_x, trial_f, accepted, alpha


def random_starts(n: int, shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """`n` zero-mean Gaussian images on the unit sphere: the network ignores an image's mean anyway."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=generator, dtype=dtype)
    return project(x - x.flatten(1).mean(dim=1).view(-1, *([1] * len(shape))))


def optimal_stimulus(network: Network, neuron: NeuronId, starts: int = 8, steps: int = 300, seed: int = 0,
                     **options: float | bool | None) -> Ascent:
    """x* for one neuron of `network`: `starts` random starts, the best in `Ascent.best`.

    The weights' gradients are switched off meanwhile (and restored): the locally connected layers
    would otherwise compute them at every step for nothing.
    """
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    params = list(network.parameters())
    flags = [p.requires_grad for p in params]
    shape = (network.config.channels, network.config.input_size, network.config.input_size)
    x0 = random_starts(starts, shape, seed, params[0].dtype).to(params[0].device)
    try:
        network.requires_grad_(False)
        return ascend(neuron_objective(network, neuron), x0, steps, **options)  # type: ignore[arg-type]
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def to_display(x: Tensor) -> Tensor:
    """An input image (C, S, S) min-max scaled into [0, 1] (same activation: see the module docstring)."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def _show(ax, image: np.ndarray) -> None:
    """(C, S, S) in [0, 1] on an axis without ticks, grey or colour."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image.transpose(1, 2, 0).clip(0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_optimal(stimulus: Tensor, value: float, top_images: np.ndarray | None, top_values: np.ndarray | None,
                 path: str | Path, title: str) -> None:
    """The optimal stimulus (large, left) beside a grid of the top stimuli with their activations (Figure 3)."""
    from matplotlib.figure import Figure

    n = 0 if top_images is None else len(top_images)
    cols = math.ceil(math.sqrt(n)) if n else 0
    rows = max(1, math.ceil(n / cols)) if n else 2
    fig = Figure(figsize=(1.3 * (rows + cols) + 0.4, 1.3 * rows + 0.7), layout="constrained")
    grid = fig.add_gridspec(rows, rows + cols)
    ax = fig.add_subplot(grid[:, :rows])
    _show(ax, to_display(stimulus.detach().cpu()).numpy())
    ax.set_title(f"optimal stimulus, f = {value:.3g}", fontsize=9)
    for i in range(n):
        assert top_images is not None and top_values is not None  # n > 0
        ax = fig.add_subplot(grid[i // cols, rows + i % cols])
        _show(ax, top_images[i])
        ax.set_title(f"{top_values[i]:.3g}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    files.write_atomic(path, buffer.getvalue())
