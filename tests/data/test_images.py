"""Decoding untrusted images: bombs skipped and counted, 16-bit and floating-point pixels scaled, not clipped."""

import warnings

import numpy as np
import pytest
from PIL import Image

from catneuron.data.images import read_folder, read_image
from catneuron.data.ingest import Settings, ingest


def test_a_decompression_bomb_is_skipped_and_counted(tmp_path, image_folder, bomb_png):
    folder = image_folder(tmp_path / "data", 5, 0)
    bomb = bomb_png(folder / "bomb.png")
    assert bomb.stat().st_size < 200
    found = read_folder(folder, 16, 1)
    assert len(found) == 5 and [p for p, _ in found.skipped] == [bomb]
    assert "decompression bomb" in found.skipped[0][1]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.linspace(20000, 60000, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    decoded = read_image(tmp_path / "deep.png", 32, 1)[0].astype(float)
    np.testing.assert_allclose(decoded, values / 257, atol=1.5)  # convert("L") alone gives 255 everywhere


def test_float_tiff_in_unit_range_is_scaled_and_out_of_range_is_refused(tmp_path):
    values = np.linspace(0, 1, 32 * 32).reshape(32, 32).astype(np.float32)
    Image.fromarray(values).save(tmp_path / "unit.tif")
    np.testing.assert_allclose(read_image(tmp_path / "unit.tif", 32, 3)[1].astype(float), values * 255, atol=1.5)
    Image.fromarray(values * 1000).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"floating-point pixels outside \[0, 1\] \(0 .. 1000\)"):
        read_image(tmp_path / "wide.tif", 32, 1)


def test_images_over_pillows_limit_are_counted_in_one_line_not_warned(tmp_path, image_folder, monkeypatch):
    """Between Pillow's limit and twice it (89-179 Mpixels) Pillow decodes with a raw two-line warning per file;
    catneuron counts them and says so once. The limit is lowered so that 20x24 images cross it."""
    folder = image_folder(tmp_path / "data", 3, 0)
    Image.new("RGB", (8, 8)).save(folder / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with warnings.catch_warnings(record=True) as caught:
        found = read_folder(folder, 16, 1)
    assert len(found) == 4 and not found.skipped and found.large == 3
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert found.notes() == ["3 image(s) over 0 Mpixels decoded (slow and memory-hungry; downscale them)"]
    with warnings.catch_warnings(record=True) as caught:
        stats = ingest([str(folder)], tmp_path / "shards", Settings(size=16, census=0, detect_faces=False),
                       progress=False).stats
    assert stats["large_images"] == 3 and stats["samples"] == 4
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
