"""One neuron's responses to an image set, and its top stimuli (the paper's first visualization, section 4.4)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from catneuron.analysis.features import as_float
from catneuron.model.network import Network, NeuronId


def check_neuron(network: Network, neuron: NeuronId) -> None:
    """Raise ValueError saying what is out of range if `network` has no such unit."""
    shapes = network.sublayer_shapes()
    if (neuron.stage, neuron.sublayer) not in shapes:
        raise ValueError(f"the network has stages 1 to {len(network.stages)}")
    maps, side = shapes[(neuron.stage, neuron.sublayer)]
    if not 0 <= neuron.map < maps:
        raise ValueError(f"stage {neuron.stage} has maps 0 to {maps - 1}")
    if not (0 <= neuron.y < side and 0 <= neuron.x < side):
        raise ValueError(f"stage {neuron.stage} {neuron.sublayer} positions run from 0 to {side - 1}")


@torch.no_grad()
@torch.no_grad()
def responses(network: Network, images: Tensor | np.ndarray, neuron: NeuronId, batch_size: int = 256) -> Tensor:
    """The neuron's activation for every image (floats in [0, 1] or uint8), (N,), in batches so large sets fit."""
    param = next(network.parameters())
    out = []
    for start in range(0, len(images), batch_size):
        batch = as_float(images[start:start + batch_size]).to(param.device, param.dtype)
        out.append(network.neuron(batch, neuron).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=param.dtype)


def top_stimuli(network: Network, images: Tensor | np.ndarray, neuron: NeuronId, k: int,
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Indices and activations of the `k` images (fewer if the set is smaller) the neuron responds to most,
    strongest first."""
    values = responses(network, images, neuron, batch_size)
    top = torch.topk(values, min(k, len(values)))
    return top.indices.numpy(), top.values.numpy()
