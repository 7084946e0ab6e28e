"""Invariance curves: exact transforms, curves of a known linear neuron against the analytic response, views."""

import numpy as np
import pytest
import torch
from PIL import Image

from catneuron.analysis.invariance import (
    invariance_curves,
    out_of_plane_curve,
    plot_curves,
    read_views,
    transform,
    write_csv,
)
from catneuron.analysis.stimuli import responses
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.model.network import Network, NeuronId

Y, X = 4, 5  # the unit's 5x5 window: rows 4..8, columns 5..9 of the 16x16 input


def linear_unit() -> tuple[Network, NeuronId, np.ndarray]:
    """A stage-1 filter unit of the tiny preset with a known weight: <w, window of standardize(x)>."""
    torch.manual_seed(0)
    net = Network(PRESETS["tiny"].model).eval()
    w = np.random.default_rng(1).normal(size=(5, 5))
    with torch.no_grad():
        net.stages[0].encoder.weight[Y * 12 + X, 0] = torch.from_numpy(w).float().flatten()
    return net, NeuronId(1, "filter", 0, Y, X), w


def analytic(w: np.ndarray, image: np.ndarray) -> float:
    z = (image - image.mean()) / image.std(ddof=1)
    return float((w * z[Y:Y + 5, X:X + 5]).sum())


def patterns(n: int) -> np.ndarray:
    """Images c + p with p zero-mean and inside rows/columns 5..10: shifts of up to 4 pixels and quarter
    turns keep p in the frame, and the fill (the image mean, c) is the background, so the transformed
    image is exactly c + p moved."""
    rng = np.random.default_rng(2)
    out = np.full((n, 16, 16), 0.5)
    for i in range(n):
        p = rng.uniform(-0.3, 0.3, (6, 6))
        out[i, 5:11, 5:11] += p - p.mean()
    return out


def test_transforms_are_exact_where_they_should_be():
    x = torch.rand(3, 2, 10, 10)
    torch.testing.assert_close(transform(x, "rotation", 90), torch.rot90(x, 1, (2, 3)))
    torch.testing.assert_close(transform(x, "rotation", -180), torch.rot90(x, 2, (2, 3)))
    torch.testing.assert_close(transform(x, "scale", 1.0), x)
    shifted = transform(x, "horizontal", 3)
    torch.testing.assert_close(shifted[..., 3:], x[..., :-3])
    torch.testing.assert_close(shifted[..., :3], x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, 10, 3))
    torch.testing.assert_close(transform(x, "vertical", -2)[..., :-2, :], x[..., 2:, :])
    flat = torch.full((1, 1, 10, 10), 0.3)
    for kind, amount in (("scale", 0.4), ("scale", 1.7), ("rotation", 33), ("horizontal", 2.5)):
        torch.testing.assert_close(transform(flat, kind, amount), flat)
    with pytest.raises(ValueError, match="unknown transform"):
        transform(x, "shear", 1)


def test_curves_of_a_linear_unit_match_the_analytic_response():
    net, neuron, w = linear_unit()
    images = patterns(3)
    shifts = np.arange(-4.0, 5.0)
    amounts = {"horizontal": shifts, "vertical": shifts, "rotation": np.array([-180.0, -90.0, 0.0, 90.0, 180.0])}
    curves = {c.transform: c for c in invariance_curves(net, images[:, None], neuron, amounts)}
    moved = {
        "horizontal": lambda im, a: np.roll(im, int(a), axis=1),
        "vertical": lambda im, a: np.roll(im, int(a), axis=0),
        "rotation": lambda im, a: np.rot90(im, int(a) // 90),
    }
    for kind, move in moved.items():
        table = np.array([[analytic(w, move(im, a)) for im in images] for a in amounts[kind]])
        curve = curves[kind]
        assert curve.n == 3
        np.testing.assert_allclose(curve.amounts, amounts[kind])
        np.testing.assert_allclose(curve.mean, table.mean(axis=1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(curve.std, table.std(axis=1, ddof=1), rtol=1e-4, atol=1e-4)


def test_enlarging_a_linear_ramp_leaves_a_linear_unit_unchanged():
    """Bilinear zoom about the centre is exact on a ramp, and standardization undoes its slope change."""
    net, neuron, w = linear_unit()
    v, u = np.mgrid[0:16, 0:16] - 7.5
    ramp = 0.5 + 0.02 * u - 0.01 * v
    curve = invariance_curves(net, ramp[None, None], neuron, {"scale": np.array([1.0, 1.25, 1.6, 2.0])})[0]
    np.testing.assert_allclose(curve.mean, analytic(w, ramp), rtol=1e-4)


def save(path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)


def test_views_are_ordered_by_the_angle_in_their_names_one_sequence_per_subfolder(tmp_path):
    for obj, offset in (("a", 0), ("b", 100)):
        for angle in (-60, -30, 0, 30):
            save(tmp_path / "views" / obj / f"{obj}_{angle}.png", 100 + angle + offset)
    sequences, angles, unit = read_views(tmp_path / "views", 16, 1)
    assert angles.tolist() == [-60, -30, 0, 30] and unit == "angle (degrees)"
    assert [s[:, 0, 0, 0].tolist() for s in sequences] == [[40, 70, 100, 130], [140, 170, 200, 230]]
    net, neuron, _ = linear_unit()
    curve = out_of_plane_curve(net, sequences, angles, unit, neuron)
    expected = (responses(net, sequences[0], neuron) + responses(net, sequences[1], neuron)) / 2
    np.testing.assert_allclose(curve.mean, expected.numpy(), rtol=1e-6)

    for i, name in enumerate(("left", "front", "right")):
        save(tmp_path / "plain" / f"{name}.png", 10 * i)
    sequences, angles, unit = read_views(tmp_path / "plain", 16, 1)
    assert angles.tolist() == [0, 1, 2] and "sorted file names" in unit
    assert sequences[0][:, 0, 0, 0].tolist() == [10, 0, 20]  # front, left, right

    save(tmp_path / "views" / "b" / "b_60.png", 0)
    with pytest.raises(UserError, match="different numbers of views"):
        read_views(tmp_path / "views", 16, 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(UserError, match="--out-of-plane .*: no images found"):
        read_views(tmp_path / "empty", 16, 1)


def test_csv_and_plot_are_written(tmp_path):
    net, neuron, _ = linear_unit()
    curves = invariance_curves(net, patterns(2)[:, None], neuron)
    write_csv(curves, tmp_path / "c.csv")
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "transform,amount,unit,mean,std,n"
    assert len(rows) == 1 + sum(len(c.amounts) for c in curves)
    assert {r.split(",")[0] for r in rows[1:]} == {"scale", "horizontal", "vertical", "rotation"}
    plot_curves(curves, tmp_path / "c.png", "title")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
