"""The locally connected layer and its decoder against a plain per-position loop."""

import pytest
import torch

from catneuron.model.local import LocalDecoder, LocallyConnected2d, extract_patches, fold_patches, to_batch_last


def loop_encode(x: torch.Tensor, weight: torch.Tensor, k: int, s: int) -> torch.Tensor:
    b, _, h, _ = x.shape
    o = (h - k) // s + 1
    out = torch.zeros(b, weight.shape[1], o, o, dtype=x.dtype)
    for i in range(o):
        for j in range(o):
            patch = x[:, :, i * s:i * s + k, j * s:j * s + k].reshape(b, -1)
            out[:, :, i, j] = patch @ weight[i * o + j].T
    return out


def loop_decode(codes: torch.Tensor, weight: torch.Tensor, c: int, h: int, k: int, s: int) -> torch.Tensor:
    b, _, o, _ = codes.shape
    out = torch.zeros(b, c, h, h, dtype=codes.dtype)
    for i in range(o):
        for j in range(o):
            patch = codes[:, :, i, j] @ weight[i * o + j].T
            out[:, :, i * s:i * s + k, j * s:j * s + k] += patch.reshape(b, c, k, k)
    return out


SHAPES = [  # channels, size, kernel, stride, maps, memory budget (bytes; small forces chunking)
    (1, 9, 3, 1, 2, 1 << 30),
    (3, 10, 4, 2, 3, 1 << 30),
    (2, 13, 5, 3, 4, 1 << 30),
    (3, 12, 5, 1, 2, 200),
    (4, 11, 3, 2, 5, 1),
]


@pytest.mark.parametrize("c,size,k,s,maps,budget", SHAPES)
def test_encoder_matches_loop_outputs_and_gradients(c, size, k, s, maps, budget):
    torch.manual_seed(0)
    layer = LocallyConnected2d(c, maps, size, k, s, memory_budget=budget).double()
    x = torch.randn(3, c, size, size, dtype=torch.float64, requires_grad=True)
    y, ref = layer(x), loop_encode(x, layer.weight, k, s)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad((y * g).sum(), (x, layer.weight))
    want = torch.autograd.grad((ref * g).sum(), (x, layer.weight))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("c,size,k,s,maps,budget", SHAPES)
def test_decoder_matches_loop_outputs_and_gradients(c, size, k, s, maps, budget):
    torch.manual_seed(1)
    dec = LocalDecoder(c, maps, size, k, s, memory_budget=budget).double()
    o = dec.out_size
    codes = torch.randn(3, maps, o, o, dtype=torch.float64, requires_grad=True)
    y, ref = dec(codes), loop_decode(codes, dec.weight, c, size, k, s)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad((y * g).sum(), (codes, dec.weight))
    want = torch.autograd.grad((ref * g).sum(), (codes, dec.weight))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("c,size,k,s,maps,budget", SHAPES)
def test_decoder_is_the_adjoint_when_weights_are_tied(c, size, k, s, maps, budget):
    torch.manual_seed(2)
    enc = LocallyConnected2d(c, maps, size, k, s, memory_budget=budget).double()
    dec = LocalDecoder(c, maps, size, k, s, memory_budget=budget).double()
    dec.weight.data = enc.weight.data.transpose(1, 2).clone()
    x = torch.randn(2, c, size, size, dtype=torch.float64)
    codes = torch.randn(2, maps, enc.out_size, enc.out_size, dtype=torch.float64)
    assert torch.isclose((enc(x) * codes).sum(), (x * dec(codes)).sum(), rtol=1e-10)


def test_fold_is_the_adjoint_of_extract():
    torch.manual_seed(3)
    xt = to_batch_last(torch.randn(2, 3, 11, 11, dtype=torch.float64))
    rows = slice(0, 4)
    patches = extract_patches(xt, 3, 2, rows)
    other = torch.randn_like(patches)
    folded = torch.zeros_like(xt)
    fold_patches(folded, other, 3, 2, rows)
    assert torch.isclose((patches * other).sum(), (xt * folded).sum(), rtol=1e-10)


def test_gradcheck_float64():
    torch.manual_seed(4)
    enc = LocallyConnected2d(2, 2, 6, 3, 1, memory_budget=64).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: enc(x), (x, enc.weight))


def test_kernel_larger_than_input_is_refused():
    with pytest.raises(ValueError, match="kernel_size"):
        LocallyConnected2d(1, 2, 4, 5)
