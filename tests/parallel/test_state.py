"""A rank's blocks without the whole model: its initial weights drawn piece by piece, its rows of a checkpoint.

BlockNetwork builds without a process group, so every rank's blocks are checked here in one process.
"""

from __future__ import annotations

import pytest
import torch

from catneuron.model.config import PRESETS, replace
from catneuron.model.network import Network
from catneuron.parallel import state
from catneuron.parallel.network import BlockNetwork, block_of
from catneuron.parallel.state import initial_blocks, normal_rows, position_runs, read_blocks
from catneuron.store import checkpoint
from catneuron.train.trainer import make_optimizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("draw", [16, 48, 4096])
def test_rows_drawn_piece_by_piece_are_the_whole_draws(monkeypatch, dtype, draw):
    monkeypatch.setattr(state, "DRAW", draw)
    shape = (7 * 9, 5, 3)  # 945 elements per 63 positions: neither a multiple of 16 nor of the pieces
    runs = position_runs((7, 9), (2, 5), (3, 8))
    torch.manual_seed(11)
    whole = torch.empty(shape, dtype=dtype).normal_(std=0.3)
    after_whole = torch.get_rng_state()
    torch.manual_seed(11)
    rows = normal_rows(shape, runs, 0.3, dtype)
    assert torch.equal(torch.get_rng_state(), after_whole)
    assert torch.equal(rows, block_of(whole, (7, 9), (2, 5), (3, 8)))


@pytest.mark.parametrize("grid", [(2, 2), (1, 3)])
def test_initial_blocks_are_the_single_process_initial_weights(grid):
    config = replace(PRESETS["tiny"], model={"weight_norm": "both"})
    torch.manual_seed(config.train.seed)
    whole = Network(config.model)
    whole.normalize_weights()
    for rank in range(grid[0] * grid[1]):
        net = BlockNetwork(config.model, grid, rank)
        initial_blocks(net, config.train.seed)
        for name, p in net.named_parameters():
            assert torch.equal(p.detach(), block_of(whole.state_dict()[name], *net.param_block(name, rank))), name


def test_a_rank_reads_its_rows_of_a_checkpoint_into_its_parameters_and_sums(tmp_path):
    """Its rows of the weights and of Adagrad's sums, read into the tensors the network and the optimizer already
    hold (the blocks are not held twice while a rank resumes)."""
    config = PRESETS["tiny"]
    torch.manual_seed(0)
    whole = Network(config.model)
    optimizer = make_optimizer(config, whole.parameters())
    whole.loss(whole(torch.rand(2, 1, 16, 16))).backward()
    optimizer.step()
    path = tmp_path / "checkpoint.safetensors"
    checkpoint.save(path, config, 7, whole, optimizer, extra={"data": "embedded"})
    for rank in range(4):
        net = BlockNetwork(config.model, (2, 2), rank)
        block_optimizer = make_optimizer(config, net.parameters())
        storage = [p.data_ptr() for p in net.parameters()] + [
            values["sum"].data_ptr() for values in block_optimizer.state_dict()["state"].values()]
        kept = read_blocks(net, block_optimizer, path, verify=rank == 0)
        assert kept.step == 7 and kept.extra == {"data": "embedded"} and kept.rng is not None
        sums = block_optimizer.state_dict()["state"]
        assert [p.data_ptr() for p in net.parameters()] + [values["sum"].data_ptr() for values in sums.values()] \
            == storage
        for index, (name, p) in enumerate(net.named_parameters()):
            where = net.param_block(name, rank)
            assert torch.equal(p.detach(), block_of(whole.state_dict()[name], *where))
            assert torch.equal(sums[index]["sum"], block_of(optimizer.state_dict()["state"][index]["sum"], *where))
