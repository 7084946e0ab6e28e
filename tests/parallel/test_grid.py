"""The block geometry: even cuts, regions, who sends what to whom, and the grids that are refused."""

from __future__ import annotations

import pytest

from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.parallel.grid import Partition, parse_grid, plan, split
from catneuron.parallel.halo import Exchange


def test_uneven_cuts_differ_by_one_and_cover_the_grid():
    assert split(16, 3) == (0, 5, 10, 16)
    part = Partition.even(7, 16, (2, 3))
    blocks = part.blocks()
    assert [b.shape for b in blocks] == [(3, 5), (3, 5), (3, 6), (4, 5), (4, 5), (4, 6)]
    assert sum(b.shape[0] * b.shape[1] for b in blocks) == 7 * 16


def test_every_receive_is_a_send_of_the_owner():
    stage = plan(PRESETS["small"].model, (2, 2))[1]  # the stride-2 stage
    regions = stage.filtering.regions()
    exchanges = [Exchange.plan(stage.input, regions, r, 0) for r in range(4)]
    for r, ex in enumerate(exchanges):
        assert ex.region == stage.filtering.region(r)
        covered = sum(b.shape[0] * b.shape[1] for _, b in ex.receives) + ex.mine.shape[0] * ex.mine.shape[1]
        assert covered == ex.region.shape[0] * ex.region.shape[1]
        for q, part in ex.receives:
            assert (r, part) in exchanges[q].sends
    assert len(exchanges[0].receives) == 3  # right, below and the corner


def test_a_grid_with_empty_blocks_is_refused_naming_the_stage_and_the_largest_grid():
    message = (r"--partitions 6x6: stage 3 filter: its 4 positions across cannot be cut into 6 non-empty blocks; "
               r"the largest grid that works is 3x3")
    with pytest.raises(UserError, match=message):
        plan(PRESETS["tiny"].model, (6, 6))
    with pytest.raises(UserError, match=r"1x3: stage 3 pool: its 2 positions .* largest grid that works is 1x2"):
        plan(PRESETS["small"].model, (1, 3))
    assert len(plan(PRESETS["tiny"].model, (3, 3))) == 3


def test_the_papers_13x13_grid_has_halos_reaching_past_the_adjacent_blocks():
    stage = plan(PRESETS["paper"].model, (13, 13))[0]  # stage 1: 18x18 windows, filter blocks of 14 rows
    regions = stage.filtering.regions()
    exchanges = [Exchange.plan(stage.input, regions, r, 0) for r in range(169)]
    reach = max(abs(q // 13 - r // 13) for r, ex in enumerate(exchanges) for q, _ in ex.receives)
    assert reach == 2
    for r, ex in enumerate(exchanges):
        covered = sum(b.shape[0] * b.shape[1] for _, b in ex.receives) + ex.mine.shape[0] * ex.mine.shape[1]
        assert covered == ex.region.shape[0] * ex.region.shape[1]
        for q, part in ex.receives:
            assert (r, part) in exchanges[q].sends


@pytest.mark.parametrize("text", ["2by2", "0x2", "2x", "x"])
def test_bad_partitions_are_one_line_errors(text):
    with pytest.raises(UserError, match=f"--partitions {text}:"):
        parse_grid(text)


def test_partitions_parse():
    assert parse_grid("2x3") == (2, 3) and parse_grid("1X1") == (1, 1)
