"""Any layer's output as a feature vector: what the paper's classifiers sit on, for any classifier.

`features(run, images, layer=...)` is the entry point for scikit-learn users; `top_features` and
`batched_features` are shared with fine-tuning, so both see exactly the same vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from catneuron.analysis.null import random_network
from catneuron.data.images import list_images, read_images
from catneuron.errors import UserError
from catneuron.model.network import Network
from catneuron.model.stage import SUBLAYERS
from catneuron.store import runs

RANDOM_WEIGHTS_SEED = 1  # evaluate's random-weights baseline: the scan's seed (0) + 1
Layer = tuple[int, str]
"""(stage, sublayer), written `s2.pool`."""


def layer_names(network: Network) -> list[str]:
    """Every layer a feature vector can come from, in network order: s1.filter, s1.pool, s1.norm, s2.filter, ..."""
    return [f"s{stage}.{sub}" for stage in range(1, len(network.stages) + 1) for sub in SUBLAYERS]


def default_layers(network: Network) -> list[Layer]:
    """Every stage's `norm` output, concatenated: see `features` for why."""
    return [(stage, "norm") for stage in range(1, len(network.stages) + 1)]


def top_layer(network: Network) -> list[Layer]:
    """The last stage's `norm`: what fine-tuning trains its classifiers on, as the paper does."""
    return [(len(network.stages), "norm")]


def parse_layers(network: Network, layer: str | Sequence[str] | None) -> list[Layer]:
    """`layer=` of `features`: a name like "s2.pool", a list of names, or None for `default_layers`."""
    if layer is None:
        return default_layers(network)
    known = layer_names(network)
    names = [layer] if isinstance(layer, str) else list(layer) if isinstance(layer, (list, tuple)) else None
    if names is None or not all(isinstance(name, str) for name in names):
        raise UserError(f"layer {layer!r}: a layer name such as 's{len(network.stages)}.norm', or a list of names; "
                        f"choose from {', '.join(known)}")
    if not names:
        raise UserError("layer []: name at least one layer, e.g. 's1.norm'")
    out = []
    for name in names:
        if name not in known:
            raise UserError(f"layer {name!r}: not a layer of this network; choose from {', '.join(known)}")
        stage, sublayer = name.split(".")
        out.append((int(stage[1:]), sublayer))
    return out


def layer_features(network: Network, images: Tensor, layers: Sequence[Layer]) -> Tensor:
    """(B, D): the layers' outputs, each flattened (map, row, column), concatenated in the order given;
    differentiable through every stage."""
    outputs = network(images, objective=False, detach=False)
    return torch.cat([getattr(outputs[stage - 1], sublayer).flatten(1) for stage, sublayer in layers], dim=1)


def top_features(network: Network, images: Tensor) -> Tensor:
    """(B, maps * side * side): the last stage's `norm`, flattened; differentiable through every stage."""
    return layer_features(network, images, top_layer(network))


def feature_size(network: Network, layers: Sequence[Layer]) -> int:
    shapes = network.sublayer_shapes()
    return sum(shapes[layer][0] * shapes[layer][1] ** 2 for layer in layers)


def as_float(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (0..255) or floats in [0, 1] -> a float32 tensor in [0, 1]."""
    batch = torch.as_tensor(images)
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


@torch.no_grad()
def batched_features(network: Network, images: np.ndarray | Tensor, batch_size: int = 256,
                     device: str | torch.device = "cpu", layers: Sequence[Layer] | None = None) -> Tensor:
    """Features of many images, a batch at a time (memory stays that of one batch), on the CPU.

    `layers` defaults to `top_layer`, the vector fine-tuning uses.
    """
    layers = top_layer(network) if layers is None else layers
    was_training = network.training
    network.eval()
    out = [layer_features(network, as_float(images[i:i + batch_size]).to(device), layers).cpu()
           for i in range(0, len(images), batch_size)]
    network.train(was_training)
    if not out:
        return torch.zeros(0, feature_size(network, layers))
    return torch.cat(out)


def _decode(paths: list[Path], size: int, channels: int) -> np.ndarray:
    found = read_images(paths, size, channels)
    if found.skipped:
        path, reason = found.skipped[0]
        raise UserError(f"images {path}: cannot be decoded ({reason}); {len(found.skipped)} file(s) unreadable")
    return found.images


def _load_images(images: str | Path | Sequence[str | Path] | np.ndarray | Tensor, size: int,
                 channels: int) -> np.ndarray | Tensor:
    if isinstance(images, (str, Path)):
        paths = list_images(images, flag="images")
        if not paths:
            raise UserError(f"images {images}: no image files there")
        return _decode(paths, size, channels)
    if isinstance(images, (np.ndarray, Tensor)):
        if images.ndim == 3 and channels == 1:
            images = images[:, None]
        if tuple(images.shape[1:]) != (channels, size, size):
            raise UserError(f"images: shape {tuple(images.shape)} does not fit the network, which takes "
                            f"(N, {channels}, {size}, {size}) in [0, 1]")
        return images
    return _decode([Path(p) for p in images], size, channels)


def features(run: str | Path, images: str | Path | Sequence[str | Path] | np.ndarray | Tensor,
             layer: str | Sequence[str] | None = None, batch_size: int = 256, device: str = "cpu",
             checkpoint: str | Path = "last", random_weights: bool = False) -> np.ndarray:
    """Features of a run's network, float32 (N, D), one row per image.

    `checkpoint`: "last" (the run's checkpoint), "best" (the watch's best trained point) or a checkpoint
    path. `random_weights=True`: the same network with random weights instead (those of `evaluate`'s
    random-weights baseline, seed 1), the control a classifier on these features needs. `device`: cpu,
    cuda, cuda:N or auto.

    `layer`: a layer name, `s<stage>.<sublayer>` with sublayer `filter` (the locally connected
    responses), `pool` (L2 pooling) or `norm` (LCN, the stage's output), e.g. "s1.norm" or "s2.pool";
    or a list of names, whose outputs are concatenated in that order. Each output is flattened
    (map, row, column). The default, None, is every stage's `norm` output concatenated. The top stage
    alone is a poor default at CPU scale: on a 10-minute `small` run its 32 numbers took a logistic
    regression to chance on faces against distractors, where stage 1's output carries the image's
    detail; the concatenation keeps every stage's information and lets the classifier weigh them
    (docs/experiments.md, "Features for a classifier"). For `small` it is 4,656 numbers (4,232 + 392 + 32);
    for `paper`, 328,848 per image, so pick layers there.

    `images`: a folder (rows in the sorted order of its image files, searched recursively), a list
    of image paths (rows in that order), or an array/tensor (N, C, S, S) in [0, 1] (uint8 0..255
    also accepted; (N, S, S) for a grey network). Files are centre-cropped and resized to the
    network's input, as in training. An unreadable file is an error, so rows never shift.
    """
    where = runs.device(device)
    with torch.random.fork_rng(devices=[]):  # building a network draws weights: the caller's random state stays
        network, ckpt = runs.load_network(run, where, checkpoint)
        if random_weights:
            network = random_network(ckpt.config.model, RANDOM_WEIGHTS_SEED, where)
    layers = parse_layers(network, layer)
    model = ckpt.config.model
    batch = _load_images(images, model.input_size, model.channels)
    return batched_features(network, batch, batch_size, where, layers).numpy()
