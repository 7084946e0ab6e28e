"""Fixtures shared across the suite."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def write_images(folder: Path, count: int, seed: int, corrupt: int = 0, size: tuple[int, int] = (20, 24)) -> Path:
    """`count` random RGB PNGs (and `corrupt` truncated JPEGs) in a new folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i in range(corrupt):
        (folder / f"bad{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder


@pytest.fixture
def image_folder() -> Callable[..., Path]:
    return write_images


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test tensors are tiny: intra-op threads only add hand-offs, which cost seconds on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
