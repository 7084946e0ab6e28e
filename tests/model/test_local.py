"""The locally connected layer and its decoder against a plain per-position loop, on one thread and on the
sweep's parallel workers, with the compiled CPU kernels and with the sweeps; bfloat16 operands against float32."""

import copy

import pytest
import torch
from localkit import SHAPES, loop_decode, loop_encode

from catneuron.model import local_cpp, local_reference
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.local_functional import to_batch_last
from catneuron.model.local_reference import Geometry, add_windows, windows


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 workers"])
def threads(request):
    """Run a test with 1 intra-op thread (the sweep inline) and with 2 (the sweep on parallel workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture(params=["compiled", "sweeps"])
def products(request, monkeypatch):
    """Run a test on the compiled kernels (where a compiler built them) and on the sweeps."""
    if request.param == "sweeps":
        monkeypatch.setattr(local_cpp, "available", lambda: False)
    return request.param


@pytest.mark.parametrize("c,size,k,s,maps,tile", SHAPES)
def test_encoder_matches_loop_outputs_and_gradients(c, size, k, s, maps, tile, threads, products):
    torch.manual_seed(0)
    layer = LocallyConnected2d(c, maps, size, k, s, tile_bytes=tile).double()
    x = torch.randn(3, c, *size, dtype=torch.float64, requires_grad=True)
    y, ref = layer(x), loop_encode(x, layer.weight, k, s)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad((y * g).sum(), (x, layer.weight))
    want = torch.autograd.grad((ref * g).sum(), (x, layer.weight))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("c,size,k,s,maps,tile", SHAPES)
def test_decoder_matches_loop_outputs_and_gradients(c, size, k, s, maps, tile, threads, products):
    torch.manual_seed(1)
    dec = LocalDecoder(c, maps, size, k, s, tile_bytes=tile).double()
    codes = torch.randn(3, maps, *dec.out_shape, dtype=torch.float64, requires_grad=True)
    y, ref = dec(codes), loop_decode(codes, dec.weight, c, size, k, s)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    got = torch.autograd.grad((y * g).sum(), (codes, dec.weight))
    want = torch.autograd.grad((ref * g).sum(), (codes, dec.weight))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_the_decoder_sums_in_the_same_order_on_any_number_of_threads(products):
    """float32 sums depend on their order: chunks are cut independently of the thread count and added in row
    order, so 1 thread and 2 workers give the same bits (a Downpour replica equals the single-process trainer)."""
    before = torch.get_num_threads()
    torch.manual_seed(0)
    layer = LocalDecoder(3, 4, (40, 40), 5, 1)
    codes = torch.randn(8, 4, 36, 36)
    try:
        torch.set_num_threads(1)
        first = layer(codes)
        torch.set_num_threads(2)
        for _ in range(3):
            assert torch.equal(layer(codes), first)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("layer_class", [LocallyConnected2d, LocalDecoder])
def test_weight_gradients_take_back_freed_memory_and_never_memory_still_held(layer_class):
    """A step's weight gradient is written into the last one's memory once that is freed (no page faults for
    fresh memory), with the values fresh memory gets; memory that a tensor still holds is never taken."""
    torch.manual_seed(0)
    layer = layer_class(2, 3, (9, 9), 4, 1)
    shape = (2, 9, 9) if layer_class is LocallyConnected2d else (3, 6, 6)
    inputs = [torch.randn(4, *shape) for _ in range(3)]

    def grad_of(x: torch.Tensor) -> torch.Tensor:
        layer.weight.grad = None  # as zero_grad(set_to_none=True) does every training step
        layer(x).square().sum().backward()
        return layer.weight.grad

    fresh = [grad_of(x).clone() for x in inputs]
    held = grad_of(inputs[0])
    second = grad_of(inputs[1])
    assert second.data_ptr() != held.data_ptr()
    torch.testing.assert_close(held, fresh[0], rtol=0, atol=0)  # not overwritten by the second step
    torch.testing.assert_close(second, fresh[1], rtol=0, atol=0)
    address = second.data_ptr()
    del held, second
    decoy = torch.empty_like(fresh[2])  # where the allocator would put a fresh gradient of this size
    third = grad_of(inputs[2])
    assert decoy.data_ptr() != address
    assert third.data_ptr() == address
    torch.testing.assert_close(third, fresh[2], rtol=0, atol=0)
    assert copy.deepcopy(layer).grad_memory is not layer.grad_memory


@pytest.mark.parametrize("c,size,k,s,maps,tile", SHAPES)
def test_decoder_is_the_adjoint_when_weights_are_tied(c, size, k, s, maps, tile):
    torch.manual_seed(2)
    enc = LocallyConnected2d(c, maps, size, k, s, tile_bytes=tile).double()
    dec = LocalDecoder(c, maps, size, k, s, tile_bytes=tile).double()
    dec.weight.data = enc.weight.data.clone()
    x = torch.randn(2, c, *size, dtype=torch.float64)
    codes = torch.randn(2, maps, *enc.out_shape, dtype=torch.float64)
    assert torch.isclose((enc(x) * codes).sum(), (x * dec(codes)).sum(), rtol=1e-10)


def test_windows_are_a_view_for_one_window_row():
    xt = to_batch_last(torch.randn(2, 3, 11, 12))
    geo = Geometry(11, 12, 3, 3, 2, 2, tile_bytes=1, element_size=4)
    assert windows(xt, geo, 2, 1, slice(9, 18)).untyped_storage().data_ptr() == xt.untyped_storage().data_ptr()


def test_tiles_fill_the_budget_and_cover_every_window_row():
    geo = Geometry(20, 20, 2, 5, 1, 10, tile_bytes=3 * 16 * 10 * 10 * 4, element_size=4)
    assert geo.tile == 3
    assert [(dy, c.start, c.stop) for y, dy, c in geo.tiles() if y == 0] == [(0, 0, 30), (3, 30, 50)]
    assert len(list(geo.tiles())) == 16 * 2


def test_gradcheck_float64():
    torch.manual_seed(4)
    enc = LocallyConnected2d(2, 2, 6, 3, 1, tile_bytes=1).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: enc(x), (x, enc.weight))


@pytest.mark.parametrize("c,size,k,s,maps,tile", SHAPES[:4] + SHAPES[6:])
def test_bfloat16_operands_match_float32_within_their_rounding(c, size, k, s, maps, tile, threads):
    """bfloat16 keeps 8 bits of mantissa: each operand is off by up to 2^-9 of itself, so a product of
    unit-sized operands summed over a fan-in of n is off by about 2^-9 sqrt(n); float32 accumulation
    keeps it there. Outputs and both gradients, as a share of their largest value: within 2%."""
    torch.manual_seed(5)
    enc = LocallyConnected2d(c, maps, size, k, s, tile_bytes=tile)
    dec = LocalDecoder(c, maps, size, k, s, tile_bytes=tile)
    x = torch.randn(4, c, *size, requires_grad=True)
    results = {}
    for operands in (None, torch.bfloat16):
        enc.operand_dtype = dec.operand_dtype = operands
        codes = enc(x)
        image = dec(codes)
        loss = (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum() + codes.square().sum()
        results[operands] = [codes, image, *torch.autograd.grad(loss, (x, enc.weight, dec.weight))]
    for got, want in zip(results[torch.bfloat16], results[None], strict=True):
        assert got.dtype == torch.float32
        error = (got - want).abs().max() / want.abs().max()
        assert 1e-5 < error < 2e-2  # bfloat16 did run, and stayed within its rounding


def test_kernel_larger_than_input_is_refused():
    with pytest.raises(ValueError, match="kernel_size"):
        LocallyConnected2d(1, 2, 4, 5)


def test_wrong_input_shapes_are_refused_like_conv2d():
    enc = LocallyConnected2d(3, 4, 16, 5)
    with pytest.raises(RuntimeError, match=r"built for 16x16 input.*but got 17x17 instead"):
        enc(torch.randn(2, 3, 17, 17))
    with pytest.raises(RuntimeError, match=r"expected input\[2, 2, 16, 16\] to have 3 channels, but got 2"):
        enc(torch.randn(2, 2, 16, 16))
    with pytest.raises(RuntimeError, match=r"expected 3D \(unbatched\) or 4D \(batched\) input"):
        enc(torch.randn(3 * 16 * 16))
    dec = LocalDecoder(3, 4, 16, 5)
    with pytest.raises(RuntimeError, match=r"built for 12x12 codes.*but got 13x13 instead"):
        dec(torch.randn(2, 4, 13, 13))
    with pytest.raises(RuntimeError, match="to have 4 channels, but got 3"):
        dec(torch.randn(2, 3, 12, 12))


def test_unbatched_input_gives_the_batched_result_without_its_batch_dimension():
    torch.manual_seed(5)
    enc, dec = LocallyConnected2d(2, 3, (9, 11), 3, 2), LocalDecoder(2, 3, (9, 11), 3, 2)
    x = torch.randn(2, 9, 11)
    torch.testing.assert_close(enc(x), enc(x[None])[0])
    codes = torch.randn(3, *enc.out_shape)
    torch.testing.assert_close(dec(codes), dec(codes[None])[0])


@pytest.mark.slow
def test_bias_is_off_by_default_and_adds_one_learned_value_per_output_unit():
    torch.manual_seed(6)
    plain = LocallyConnected2d(2, 3, 8, 3)
    assert plain.bias is None and list(dict(plain.named_parameters())) == ["weight"]
    torch.manual_seed(6)
    biased = LocallyConnected2d(2, 3, 8, 3, bias=True)
    torch.testing.assert_close(biased.weight, plain.weight)  # drawn after the weight: same weights for a seed
    assert biased.bias.shape == (3, 6, 6) and biased.bias.abs().max() <= 1 / (3 * 3 * 2) ** 0.5
    assert biased.bias.std() > 0
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    biased.double()
    torch.testing.assert_close(biased(x), loop_encode(x, biased.weight, 3, 1) + biased.bias)
    assert torch.autograd.gradcheck(lambda x, w, b: biased(x), (x, biased.weight, biased.bias))
    assert "bias=True" in repr(biased)


@pytest.mark.parametrize("k,s,height", [(5, 1, 12), (5, 2, 12), (3, 2, 11), (2, 3, 11), (4, 4, 13)])
def test_each_image_row_is_painted_by_the_window_rows_of_the_output_rows_covering_it(k, s, height):
    geo = Geometry(height, 9, 2, k, s, 3, tile_bytes=1, element_size=4)
    weight = torch.randn(geo.out_h * geo.out_w, 3, k * geo.row_fan_in)
    w = weight.view(geo.out_h, geo.out_w, 3, k, geo.row_fan_in)
    for y in range(height):
        cover = geo.covering(y)
        assert list(cover) == [py for py in range(geo.out_h) if 0 <= y - py * s < k]
        assert len(cover) <= geo.reach
        if cover:
            rows = local_reference.diagonal(weight, geo, y, cover)
            assert rows.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()
            assert torch.equal(rows, torch.stack([w[py, :, :, y - py * s] for py in cover], dim=1))


def test_windows_added_into_a_row_sum_where_they_overlap():
    geo = Geometry(6, 11, 2, 4, 1, 3, tile_bytes=1, element_size=8)
    painted = torch.randn(geo.out_w, geo.row_fan_in, 3, dtype=torch.float64)
    row = torch.zeros(geo.width, geo.channels, 3, dtype=torch.float64)
    add_windows(row, painted, geo)
    want = torch.zeros_like(row)
    for x in range(geo.out_w):
        want[x:x + 4] += painted[x].view(4, 2, 3)
    torch.testing.assert_close(row, want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_give_outputs_of_their_type_like_conv2d(dtype):
    enc = LocallyConnected2d(2, 3, 6, 3).to(dtype)
    dec = LocalDecoder(2, 3, 6, 3).to(dtype)
    x = torch.randn(2, 2, 6, 6, dtype=dtype)
    codes = enc(x)
    assert codes.dtype == dtype and dec(codes).dtype == dtype
    want = enc.float()(x.float())
    torch.testing.assert_close(codes.float(), want, rtol=2e-2, atol=2e-2)


def test_float32_inputs_with_bf16_operands_stay_float32():
    """The network's `precision: bf16`: bfloat16 products of float32 inputs, float32 activations."""
    enc = LocallyConnected2d(2, 3, 6, 3)
    enc.operand_dtype = torch.bfloat16
    assert enc(torch.randn(2, 2, 6, 6)).dtype == torch.float32


def test_an_input_of_another_type_than_the_weights_is_refused_like_conv2d():
    enc = LocallyConnected2d(2, 3, 6, 3)
    with pytest.raises(RuntimeError, match=r"Input type \(torch.float64\) and weight type \(torch.float32\)"):
        enc(torch.randn(1, 2, 6, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="should be the same"):
        LocalDecoder(2, 3, 6, 3)(torch.randn(1, 3, 4, 4, dtype=torch.float64))


def test_the_constructors_input_size_is_the_attributes_name():
    assert LocallyConnected2d(2, 3, (6, 7), 3).input_size == (6, 7)
    assert LocalDecoder(2, 3, 6, 3).input_size == (6, 6)
