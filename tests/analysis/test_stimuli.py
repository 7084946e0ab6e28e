"""Top stimuli: the images a neuron responds to most, computed in batches, for floats and uint8 alike."""

import numpy as np
import pytest
import torch

from catneuron.analysis.stimuli import check_neuron, responses, top_stimuli
from catneuron.model.config import PRESETS
from catneuron.model.network import Network, NeuronId, standardize


def test_top_stimuli_of_a_linear_unit_match_a_direct_computation():
    torch.manual_seed(0)
    net = Network(PRESETS["tiny"].model).eval()
    neuron = NeuronId(1, "filter", 1, 2, 5)
    images = np.random.default_rng(0).integers(0, 256, (37, 1, 16, 16), dtype=np.uint8)
    w = net.stages[0].encoder.weight[2 * 12 + 5, 1].detach().view(5, 5)
    z = standardize(torch.from_numpy(images).float() / 255)
    expected = (z[:, 0, 2:7, 5:10] * w).sum(dim=(1, 2))
    index, values = top_stimuli(net, images, neuron, k=5, batch_size=8)
    assert index.tolist() == torch.argsort(expected, descending=True)[:5].tolist()
    np.testing.assert_allclose(values, expected[index].numpy(), rtol=1e-4, atol=1e-5)
    floats = torch.from_numpy(images).float() / 255
    torch.testing.assert_close(responses(net, floats, neuron, batch_size=100), responses(net, images, neuron))
    index, values = top_stimuli(net, floats[:3], neuron, k=10)
    assert sorted(index.tolist()) == [0, 1, 2] and values[0] >= values[1] >= values[2]


@pytest.mark.parametrize("neuron,message", [
    (NeuronId(4, "pool", 0, 0, 0), "stages 1 to 3"),
    (NeuronId(2, "norm", 4, 0, 0), "maps 0 to 3"),
    (NeuronId(1, "filter", 0, 12, 0), "positions run from 0 to 11"),
    (NeuronId(3, "pool", 0, 0, -1), "positions run from 0 to"),
])
def test_check_neuron_says_what_is_out_of_range(neuron, message):
    net = Network(PRESETS["tiny"].model)
    with pytest.raises(ValueError, match=message):
        check_neuron(net, neuron)
    check_neuron(net, NeuronId(3, "norm", 3, 0, 0))
