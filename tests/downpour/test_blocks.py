"""Parameter shards aligned with blocks: each shard holds rows of one block only, every row of the whole network is
held once, and a rank loading its shards' rows holds exactly its block of every tensor; a grid with empty
blocks is refused before Ray starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catneuron.data.sources import ArraySource
from catneuron.downpour.blocks import BlockShards
from catneuron.downpour.driver import Downpour, DownpourOptions
from catneuron.downpour.shards import scatter
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.parallel.network import BlockNetwork, block_of
from catneuron.train.trainer import Trainer

MODEL = PRESETS["tiny"].model


@pytest.mark.parametrize("grid,per_block", [((1, 2), 1), ((2, 2), 2), ((1, 3), 3)])
def test_each_rank_loads_exactly_its_block_from_its_own_shards(grid, per_block):
    torch.manual_seed(0)
    whole = list(Network(MODEL).parameters())
    shards = BlockShards(Network(MODEL), MODEL, grid, per_block)
    ranks = grid[0] * grid[1]
    assert len(shards.pieces) == ranks * per_block
    for rank in range(ranks):
        assert shards.of_rank(rank) == list(range(rank * per_block, (rank + 1) * per_block))
        block = BlockNetwork(MODEL, grid, rank)
        params = list(block.parameters())
        for p in params:
            p.detach().zero_()
        for k in shards.of_rank(rank):  # what a BlockRank does with the flats it fetches
            scatter(shards.gather(whole, k), shards.pieces[k], params)
        for (name, p), w in zip(block.named_parameters(), whole, strict=True):
            assert torch.equal(p.detach(), block_of(w.detach(), *block.param_block(name, rank))), (rank, name)


@pytest.mark.parametrize("grid,per_block", [((2, 2), 1), ((1, 3), 2)])
def test_every_row_is_held_by_one_shard_of_its_own_block(grid, per_block):
    network = Network(MODEL)
    shards = BlockShards(network, MODEL, grid, per_block)
    held = [torch.zeros_like(p) for p in network.parameters()]
    for k in range(len(shards.pieces)):
        mine = [torch.zeros_like(p) for p in network.parameters()]
        shards.scatter(shards.gather([torch.ones_like(p) for p in network.parameters()], k), k, mine)
        rank = k // per_block
        block = BlockNetwork(MODEL, grid, rank)
        for (name, _), m in zip(block.named_parameters(), mine, strict=True):
            inside = block_of(m, *block.param_block(name, rank))
            assert int(inside.sum()) == int(m.sum())  # nothing outside the shard's block
        for h, m in zip(held, mine, strict=True):
            h += m
    for h in held:
        assert torch.equal(h, torch.ones_like(h))  # every row once


def test_a_grid_with_empty_blocks_is_refused_before_ray_starts(tmp_path):
    trainer = Trainer(PRESETS["tiny"], ArraySource(np.zeros((4, 1, 16, 16), np.uint8), "four images"), tmp_path)
    refusal = r"--partitions 6x6: stage 3 filter: .* non-empty blocks; the largest grid that works is 3x3"
    with pytest.raises(UserError, match=refusal):
        Downpour(trainer, DownpourOptions(replicas=2, partitions=(6, 6)))
