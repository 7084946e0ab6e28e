"""L2 pooling and local contrast normalization against their formulas, written as loops."""

import math

import torch
import torch.nn.functional as F

from catneuron.model.lcn import LocalContrastNorm, gaussian_taps, gaussian_window
from catneuron.model.pooling import L2Pool2d


def test_l2_pool_is_sqrt_eps_plus_sum_of_squares_of_one_map():
    torch.manual_seed(0)
    h = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    pool = L2Pool2d(3, stride=2, eps=0.01)
    y = pool(h)
    assert y.shape == (2, 3, 3, 3)
    for b in range(2):
        for m in range(3):
            for i in range(3):
                for j in range(3):
                    window = h[b, m, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                    assert math.isclose(y[b, m, i, j].item(), math.sqrt(0.01 + (window**2).sum().item()), rel_tol=1e-9)


def test_l2_pool_gradient_matches_finite_differences():
    torch.manual_seed(1)
    h = torch.randn(2, 2, 8, 7, dtype=torch.float64, requires_grad=True)
    for stride in (1, 2):
        assert torch.autograd.gradcheck(L2Pool2d(3, stride=stride), (h,))


def test_gaussian_window_sums_to_one_over_maps_and_space():
    w = gaussian_window(5, 4).double()
    assert w.shape == (1, 4, 5, 5)
    assert math.isclose(w.sum().item(), 1.0, rel_tol=1e-6)
    assert w[0, 0, 2, 2] == w.max()


def lcn_reference(x: torch.Tensor, size: int) -> torch.Tensor:
    """Jarrett et al.'s LCN, one pixel at a time, windows renormalized at borders."""
    w = gaussian_window(size, x.shape[1]).double()[0]
    b, c, h, width = x.shape
    r = size // 2

    def local_mean(t: torch.Tensor, n: int, i: int, j: int) -> float:
        total = weight = 0.0
        for p in range(-r, r + 1):
            for q in range(-r, r + 1):
                if 0 <= i + p < h and 0 <= j + q < width:
                    total += (w[:, p + r, q + r] * t[n, :, i + p, j + q]).sum().item()
                    weight += w[:, p + r, q + r].sum().item()
        return total / weight

    v = torch.empty_like(x)
    for n in range(b):
        for i in range(h):
            for j in range(width):
                v[n, :, i, j] = x[n, :, i, j] - local_mean(x, n, i, j)
    sigma = torch.empty(b, h, width, dtype=x.dtype)
    for n in range(b):
        for i in range(h):
            for j in range(width):
                sigma[n, i, j] = math.sqrt(local_mean(v * v, n, i, j))
    floor = sigma.mean(dim=(1, 2)).clamp_min(1e-4)
    return v / torch.maximum(sigma, floor[:, None, None]).unsqueeze(1)


def test_lcn_matches_reference():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64) * 3 + 1
    got = LocalContrastNorm(3, 3).double()(x)
    torch.testing.assert_close(got, lcn_reference(x, 3))


def test_lcn_of_constant_image_is_zero_and_finite():
    y = LocalContrastNorm(2, 5).double()(torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64))
    assert torch.isfinite(y).all() and y.abs().max() < 1e-8


def test_l2_pool_gradient_equals_autograd_of_its_formula_in_float32():
    torch.manual_seed(2)
    for stride in (1, 2):
        h = torch.randn(3, 4, 9, 8, requires_grad=True)
        weights = torch.rand(3, 4, *L2Pool2d(3, stride)(h).shape[-2:])
        (L2Pool2d(3, stride)(h) * weights).sum().backward()
        got, h.grad = h.grad, None
        windows = F.unfold((h * h).reshape(12, 1, 9, 8), 3, stride=stride).sum(dim=1)
        (torch.sqrt(0.01 + windows).reshape(weights.shape) * weights).sum().backward()
        torch.testing.assert_close(got, h.grad, rtol=1e-6, atol=1e-6)


def test_lcn_blur_equals_zero_padded_convolution():
    torch.manual_seed(3)
    x = torch.randn(4, 1, 9, 6, dtype=torch.float64)
    norm = LocalContrastNorm(2, 5).double()
    taps = gaussian_taps(5)
    want = F.conv2d(F.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, 2)), taps.view(1, 1, -1, 1), padding=(2, 0))
    torch.testing.assert_close(norm._blur(x), want)
    torch.testing.assert_close(norm.coverage(x), norm._blur(torch.ones_like(x[:1])))
