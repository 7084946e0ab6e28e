"""The face census on synthetic patches (no real face is available offline) and the real cascade's loading."""

from __future__ import annotations

import numpy as np

from catneuron.data.census import Census, allocate_patches, haar_faces, patch_census


def test_patch_census_counts_and_patch_size():
    shapes, calls = [], iter(range(10_000))

    def every_other(patch: np.ndarray) -> list:
        shapes.append(patch.shape)
        return [(0, 0, 10, 10)] if next(calls) % 2 else []

    image = np.zeros((200, 200), np.uint8)
    census = patch_census(image, 40, np.random.default_rng(0), every_other)
    assert (census.patches, census.faces, census.fraction) == (40, 20, 0.5)
    assert set(shapes) == {(60, 60)}
    shapes.clear()
    assert patch_census(np.zeros((40, 50), np.uint8), 3, np.random.default_rng(0), every_other).patches == 3
    assert set(shapes) == {(40, 50)}


def test_census_sums_and_empty_fraction():
    assert Census(10, 1) + Census(30, 2) == Census(40, 3)
    assert np.isnan(Census().fraction)


def test_allocation_respects_total_and_is_seeded():
    spread = allocate_patches(1000, 37, seed=3)
    assert sum(spread.values()) == 1000
    assert all(0 <= slot < 37 for slot in spread)
    assert spread == allocate_patches(1000, 37, seed=3)
    assert spread != allocate_patches(1000, 37, seed=4)
    assert allocate_patches(0, 10, 0) == {} and allocate_patches(5, 0, 0) == {}


def test_real_haar_cascade_loads_and_finds_nothing_in_flat_grey():
    assert haar_faces(np.full((100, 100), 128, np.uint8)) == []
