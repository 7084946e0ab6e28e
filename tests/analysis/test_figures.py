"""The filter picture: every stage's W1 beside its W2, tiles that are the weights themselves."""

import numpy as np
import torch
from PIL import Image

from catneuron.analysis.figures import _filter_tiles, _mosaic, _signed, filters
from catneuron.model.config import PRESETS
from catneuron.model.network import Network


def tiny_network() -> Network:
    torch.manual_seed(0)
    return Network(PRESETS["tiny"].model).eval()


def test_tiles_are_the_weights_of_each_map_by_position_or_input_map():
    net = tiny_network()
    enc = net.stages[0].encoder  # over the grey image: 12x12 positions, k = 5
    weight = enc.weight.detach().numpy()
    tiles, columns = _filter_tiles(weight, enc.out_shape, enc.kernel_size, enc.in_channels)
    assert columns == "columns: positions" and (len(tiles), len(tiles[0])) == (4, 3)
    np.testing.assert_allclose(tiles[2][1], _signed(weight[6 * 12 + 6, 2].reshape(5, 5)))  # map 2, centre
    dec = net.stages[1].decoder  # over 4 maps: 8x8 positions, k = 3, fan-in (row, column, channel)
    weight = dec.weight.detach().numpy()
    tiles, columns = _filter_tiles(weight, dec.out_shape, dec.kernel_size, dec.in_channels)
    assert columns.startswith("columns: input maps") and (len(tiles), len(tiles[0])) == (4, 4)
    centre = weight[4 * 8 + 4, 3].reshape(3, 3, 4)
    for c in range(4):
        np.testing.assert_allclose(tiles[3][c], 0.5 + centre[..., c] / (2 * np.abs(centre).max()))
    image = _mosaic(tiles)
    assert image.shape == (4 * 4 - 1, 4 * 4 - 1) and image[3].min() == 1.0  # white rows between tiles
    np.testing.assert_allclose(image[12:15, 8:11], tiles[3][2])


def test_the_picture_shows_the_decoder_of_every_stage_beside_the_encoder(tmp_path):
    net = tiny_network()
    before = np.asarray(Image.open(filters(net, tmp_path / "a.png")).convert("L"), dtype=float)
    with torch.no_grad():
        net.stages[2].decoder.weight.zero_()
    after = np.asarray(Image.open(filters(net, tmp_path / "b.png")).convert("L"), dtype=float)
    assert before.shape == after.shape
    rows, cols = np.nonzero(before != after)
    assert len(rows) > 0  # stage 3's W2 is drawn ...
    assert cols.min() > before.shape[1] * 0.5 and rows.min() > before.shape[0] * 0.6  # ... bottom right
