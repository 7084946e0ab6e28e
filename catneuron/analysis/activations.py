"""Every unit's activation over an image set, streamed in batches, flattened in one fixed order."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from catneuron.model.network import Network, NeuronId


class UnitIndex:
    """Maps flat unit numbers to NeuronIds: sublayers in network order, each (map, y, x) row-major."""

    def __init__(self, network: Network) -> None:
        self.blocks: list[tuple[int, str, int, int, int]] = []  # stage, sublayer, maps, side, first unit
        start = 0
        for (stage, sublayer), (maps, side) in network.sublayer_shapes().items():
            self.blocks.append((stage, sublayer, maps, side, start))
            start += maps * side * side
        self.size = start

    def __len__(self) -> int:
        return self.size

    def neuron(self, unit: int) -> NeuronId:
        for stage, sublayer, maps, side, start in self.blocks:
            if start <= unit < start + maps * side * side:
                m, rest = divmod(unit - start, side * side)
                y, x = divmod(rest, side)
                return NeuronId(stage, sublayer, m, y, x)
        raise IndexError(unit)

    def unit(self, neuron: NeuronId) -> int:
        """The flat unit number of `neuron` (the inverse of `neuron`)."""
        for stage, sublayer, _, side, start in self.blocks:
            if (stage, sublayer) == (neuron.stage, neuron.sublayer):
                return start + (neuron.map * side + neuron.y) * side + neuron.x
        raise IndexError(str(neuron))

    def units_of_stage(self, stage: int) -> np.ndarray:
        return np.concatenate([np.arange(start, start + maps * side * side)
                               for s, _, maps, side, start in self.blocks if s == stage])


def unit_activations(network: Network, images: np.ndarray | torch.Tensor, batch_size: int = 256
                     ) -> Iterator[torch.Tensor]:
    """(B, U) float32 activations per batch of `images` ((N, C, S, S) in [0, 1])."""
    device = next(network.parameters()).device
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.as_tensor(np.asarray(images[start:start + batch_size], dtype=np.float32)).to(device)
            acts = network.activations(batch)
            yield torch.cat([a.reshape(len(batch), -1) for a in acts.values()], dim=1).float().cpu()
