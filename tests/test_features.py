"""`catneuron.features(run, images)`: the same rows whatever form the images come in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import catneuron
from catneuron.data.sources import ArraySource
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.train.trainer import Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (20, 1, 16, 16), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("run")
    Trainer(PRESETS["tiny"], ArraySource(images, "noise"), folder).fit(2, progress=False)
    return folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("pictures")
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16), dtype=np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder, images


def test_folder_paths_and_arrays_give_the_same_rows(run, pictures):
    folder, images = pictures
    from_folder = catneuron.features(run, folder)
    assert from_folder.shape == (5, 4 * 3 * 3) and from_folder.dtype == np.float32  # tiny: 4 maps, 3x3 on top
    paths = [folder / f"{i}.png" for i in (3, 1)]
    assert np.allclose(catneuron.features(run, paths), from_folder[[3, 1]], atol=1e-5)
    floats = images[:, None].astype(np.float32) / 255
    assert np.allclose(catneuron.features(run, floats), from_folder, atol=1e-5)
    assert np.allclose(catneuron.features(run, torch.from_numpy(floats[:, 0])), from_folder, atol=1e-5)
    assert np.allclose(catneuron.features(run, images, batch_size=2), from_folder, atol=1e-5)


def test_bad_images_are_user_errors(run, tmp_path):
    with pytest.raises(UserError, match="does not fit the network"):
        catneuron.features(run, np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(UserError, match="no such file or folder"):
        catneuron.features(run, tmp_path / "missing")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot be decoded"):
        catneuron.features(run, [tmp_path / "broken.png"])


def test_import_catneuron_stays_light():
    code = "import sys, catneuron; assert 'torch' not in sys.modules; assert callable(catneuron.features)"
    subprocess.run([sys.executable, "-c", code], check=True)
