"""Rows between a network's tensors and a shard's flat array (catneuron.downpour.shards.gather / scatter)."""

from __future__ import annotations

import warnings

import torch

from catneuron.downpour.shards import gather, layout, scatter


def test_rows_go_to_a_shard_and_back_from_a_read_only_array_without_a_warning():
    """A fetched array is read-only (Ray's object store); scatter copies it into tensors on their own device."""
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(5, 2, 3, generator=generator), torch.randn(4, generator=generator)]
    pieces = layout([("a.weight", (5, 2, 3)), ("b.weight", (4,))], 2)
    flats = [gather(tensors, shard) for shard in pieces]
    assert sum(f.size for f in flats) == 5 * 2 * 3 + 4
    back = [torch.zeros_like(t) for t in tensors]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for flat, shard in zip(flats, pieces, strict=True):
            flat.flags.writeable = False
            scatter(flat, shard, back)
    for t, b in zip(tensors, back, strict=True):
        assert torch.equal(t, b)
