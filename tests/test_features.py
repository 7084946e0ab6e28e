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
from catneuron.model.network import Network
from catneuron.store import runs
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
    # tiny: 4 maps; the norm outputs are 10x10, 6x6 and 3x3
    assert from_folder.shape == (5, 4 * (100 + 36 + 9)) and from_folder.dtype == np.float32
    paths = [folder / f"{i}.png" for i in (3, 1)]
    assert np.allclose(catneuron.features(run, paths), from_folder[[3, 1]], atol=1e-5)
    floats = images[:, None].astype(np.float32) / 255
    assert np.allclose(catneuron.features(run, floats), from_folder, atol=1e-5)
    assert np.allclose(catneuron.features(run, torch.from_numpy(floats[:, 0])), from_folder, atol=1e-5)
    assert np.allclose(catneuron.features(run, images, batch_size=2), from_folder, atol=1e-5)


def test_layers_are_the_network_outputs_in_the_order_named(run, pictures):
    _, images = pictures
    network, _ = runs.load_network(run)
    with torch.no_grad():
        outputs = network(torch.from_numpy(images[:, None] / 255.0).float(), objective=False)
    expected = {f"s{i}.{sub}": getattr(o, sub).flatten(1).numpy()
                for i, o in enumerate(outputs, start=1) for sub in ("filter", "pool", "norm")}
    for name in ("s1.filter", "s2.pool", "s3.norm"):
        assert np.allclose(catneuron.features(run, images, layer=name), expected[name], atol=1e-5)
    both = catneuron.features(run, images, layer=["s3.filter", "s1.norm"])
    assert np.allclose(both, np.concatenate([expected["s3.filter"], expected["s1.norm"]], axis=1), atol=1e-5)
    every_norm = np.concatenate([expected[f"s{i}.norm"] for i in (1, 2, 3)], axis=1)
    assert np.allclose(catneuron.features(run, images), every_norm, atol=1e-5)


def test_unknown_layers_are_user_errors(run, pictures):
    _, images = pictures
    for bad in ("s4.norm", "s1.conv", "norm", ["s1.norm", "s1.lcn"]):
        with pytest.raises(UserError, match="not a layer of this network; choose from s1.filter"):
            catneuron.features(run, images, layer=bad)
    with pytest.raises(UserError, match="at least one layer"):
        catneuron.features(run, images, layer=[])


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


def test_a_layer_that_is_not_a_name_says_what_to_give(run, pictures):
    _, images = pictures
    for bad in (3, 2.5, [1, 2], None.__class__):
        with pytest.raises(ValueError, match=r"a layer name such as 's3.norm', or a list of names; choose from"):
            catneuron.features(run, images, layer=bad)


def test_random_weights_are_evaluates_control_and_leave_the_random_state(run, pictures):
    _, images = pictures
    trained = catneuron.features(run, images, layer="s2.norm")
    torch.manual_seed(7)
    before = torch.get_rng_state()
    control = catneuron.features(run, images, layer="s2.norm", random_weights=True)
    assert torch.equal(torch.get_rng_state(), before)
    network, ckpt = runs.load_network(run)
    torch.manual_seed(1)  # evaluate's random-weights baseline: seed 0 + 1
    random = Network(ckpt.config.model).eval()
    with torch.no_grad():
        expected = random(torch.from_numpy(images[:, None] / 255.0).float(), objective=False)[1].norm.flatten(1)
    assert np.allclose(control, expected.numpy(), atol=1e-5) and not np.allclose(control, trained, atol=1e-3)


def test_checkpoint_and_device_choices(run, pictures, tmp_path):
    _, images = pictures
    last = catneuron.features(run, images, layer="s1.norm")
    assert np.array_equal(catneuron.features(run, images, layer="s1.norm", checkpoint=runs.checkpoint_path(run)),
                          last)
    with pytest.raises(UserError, match="--checkpoint best: .* has no checkpoint-best.safetensors"):
        catneuron.features(run, images, checkpoint="best")
    with pytest.raises(UserError, match="--checkpoint nowhere.safetensors: no such file"):
        catneuron.features(run, images, checkpoint="nowhere.safetensors")
    with pytest.raises(UserError, match="--device gpu7: not a device name"):
        catneuron.features(run, images, device="gpu7")
