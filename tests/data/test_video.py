"""Random video frames: seeded, in range, one per request, and clear errors on broken files."""

from __future__ import annotations

import numpy as np
import pytest
from mediagen import make_broken, make_video

from catneuron.data.video import random_frames


@pytest.mark.parametrize(("codec", "ext"), [("libx264", "mp4"), ("mpeg4", "avi"), ("libvpx", "webm")])
def test_frames_are_seeded_and_in_range(tmp_path, codec, ext):
    video = make_video(tmp_path / f"v.{ext}", seed=1, frames=24, fps=12, codec=codec)
    first = random_frames(video, 3, np.random.default_rng(5))
    again = random_frames(video, 3, np.random.default_rng(5))
    assert len(first) == 3
    assert [f.time for f in first] == sorted(f.time for f in first)
    assert all(0 <= f.time < 2.0 for f in first)
    assert [f.time for f in first] == [f.time for f in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again, strict=True))
    assert first[0].image.size == (64, 48)
    others = {tuple(f.time for f in random_frames(video, 3, np.random.default_rng(s))) for s in range(4)}
    assert len(others) > 1


def test_broken_files_raise_value_error(tmp_path):
    for path in make_broken(tmp_path).values():
        with pytest.raises(ValueError, match=str(path.name)):
            random_frames(path, 1, np.random.default_rng(0))
