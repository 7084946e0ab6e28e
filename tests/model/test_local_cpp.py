"""The compiled CPU kernels against the sweeps and a plain per-position loop, on any thread count; the layer's
gradients through them; and the sweeps, with one warning, where no compiler is available."""

import warnings

import pytest
import torch
from localkit import SHAPES, loop_decode, loop_encode

from catneuron.model import local_cpp, local_functional, local_reference
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.local_reference import Geometry

PRODUCTS = ("contract", "spread", "correlate")


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Build (or load from the cache) once for the module; without a compiler these tests cannot run."""
    if not local_cpp.available():
        pytest.skip("no C++ compiler: the compiled kernels are not built here")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def operands(c, size, k, s, maps, batch, dtype):
    geo = Geometry(*size, c, k, s, batch, 1 << 20, dtype.itemsize)
    positions = geo.out_h * geo.out_w
    image = torch.randn(*size, c, batch, dtype=dtype)
    weight = torch.randn(positions, maps, k * k * c, dtype=dtype)
    codes = torch.randn(positions, maps, batch, dtype=dtype)
    return geo, {"contract": (image, weight, geo), "spread": (codes, weight, geo), "correlate": (image, codes, geo)}


@pytest.mark.parametrize("batch", [3, 37, 69])  # 37, 69: tiles of two and of three vectors, four lanes, one entry
@pytest.mark.parametrize("c,size,k,s,maps,tile", SHAPES)
def test_each_product_equals_the_sweeps_within_float32_rounding(c, size, k, s, maps, tile, batch):
    torch.manual_seed(0)
    _, args = operands(c, size, k, s, maps, batch, torch.float32)
    for name in PRODUCTS:
        got, want = getattr(local_cpp, name)(*args[name]), getattr(local_reference, name)(*args[name])
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("shape", [(2, (50, 9), 4, 3, 3, 5),  # bands of 3 image rows, the last short, one in none
                                   (3, (40, 30), 9, 1, 8, 37)])  # bands of 2; window rows of 27: blocks of 8, 2, 1
def test_spread_in_bands_of_image_rows_equals_the_sweeps(shape):
    """Images of 32 rows or more are painted several rows a task (the layer's tests use smaller ones)."""
    torch.manual_seed(5)
    _, args = operands(*shape, torch.float32)
    want = local_reference.spread(*args["spread"])
    torch.testing.assert_close(local_cpp.spread(*args["spread"]), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("shape", [(3, (20, 40), 18, 1, 8, 37),  # the paper's window rows: 54 = 48 + 6, 6 paired
                                   (3, (16, 24), 7, 1, 3, 5),  # 21 = 16 + 5: 5 paired, the odd last row alone
                                   (4, (14, 30), 5, 2, 2, 5)])  # 20 = 16 + 4: 4 paired over rows 0-3, row 4 alone
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_correlate_of_window_rows_longer_than_a_vector_equals_the_sweeps(shape, dtype):
    """Whole vectors of a window row in tiles of three, two, one, the rest of two rows in one vector."""
    torch.manual_seed(6)
    _, args = operands(*shape, dtype)
    want = local_reference.correlate(*args["correlate"])
    got = local_cpp.correlate(*args["correlate"], out=torch.full_like(want, float("nan")))  # every entry written
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("c,size,k,s,maps,tile", SHAPES)
def test_the_layer_on_the_kernels_equals_the_plain_loop_in_float64(c, size, k, s, maps, tile):
    torch.manual_seed(1)
    assert local_functional.backend(torch.device("cpu"), torch.float64) is local_cpp
    enc = LocallyConnected2d(c, maps, size, k, s).double()
    dec = LocalDecoder(c, maps, size, k, s).double()
    x = torch.randn(5, c, *size, dtype=torch.float64, requires_grad=True)
    codes = enc(x)
    torch.testing.assert_close(codes, loop_encode(x, enc.weight, k, s))
    image = dec(codes)
    torch.testing.assert_close(image, loop_decode(codes, dec.weight, c, size, k, s))
    g = torch.randn_like(image)
    got = torch.autograd.grad((image * g).sum(), (x, enc.weight, dec.weight))
    ref = loop_decode(loop_encode(x, enc.weight, k, s), dec.weight, c, size, k, s)
    want = torch.autograd.grad((ref * g).sum(), (x, enc.weight, dec.weight))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_gradients_against_finite_differences_in_float64():
    torch.manual_seed(4)
    enc, dec = LocallyConnected2d(2, 3, 7, 3, 2).double(), LocalDecoder(2, 3, 7, 3, 2).double()
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w1, w2: dec(enc(x)), (x, enc.weight, dec.weight))


@pytest.mark.parametrize("shape", [(3, (20, 21), 5, 1, 8, 100), (8, (17, 17), 6, 2, 5, 37),
                                   (1, (32, 32), 8, 1, 8, 100)])  # the `small` preset: two window rows a vector
def test_the_same_bits_on_any_number_of_threads(shape, threads):
    """Every output value is summed by one task in a fixed order: a resumed run equals an uninterrupted one."""
    torch.manual_seed(2)
    _, args = operands(*shape, torch.float32)
    results = {}
    for count in (1, 2, 3):
        threads(count)
        results[count] = [getattr(local_cpp, name)(*args[name]) for name in PRODUCTS]
    for count in (2, 3):
        for got, want in zip(results[count], results[1], strict=True):
            assert torch.equal(got, want)


def test_bfloat16_and_other_devices_keep_the_sweeps():
    assert local_functional.backend(torch.device("cpu"), torch.float32) is local_cpp
    assert local_functional.backend(torch.device("cpu"), torch.bfloat16) is local_reference


def test_the_cache_is_keyed_on_the_processor_and_relocatable(monkeypatch, tmp_path):
    monkeypatch.setenv("CATNEURON_KERNEL_CACHE", str(tmp_path))
    here = local_cpp.library_path(b"source", "g++ 12", "avx2 avx512f")
    assert here.parent == tmp_path
    assert local_cpp.library_path(b"source", "g++ 12", "avx2") != here  # -march=native code is machine-specific
    assert local_cpp.library_path(b"source", "g++ 13", "avx2 avx512f") != here
    assert local_cpp.library_path(b"edited", "g++ 12", "avx2 avx512f") != here


def test_without_a_compiler_the_sweeps_run_and_one_warning_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("CATNEURON_KERNEL_CACHE", str(tmp_path / "cache"))
    local_cpp._library.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert not local_cpp.available()
            assert local_functional.backend(torch.device("cpu"), torch.float32) is local_reference
            torch.manual_seed(3)
            enc = LocallyConnected2d(2, 3, 9, 4, 1).double()
            x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
            torch.testing.assert_close(enc(x), loop_encode(x, enc.weight, 4, 1))
            assert not local_cpp.available()
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1 and "no compiled CPU kernels" in messages[0] and "sweeps" in messages[0]
    finally:
        monkeypatch.undo()
        local_cpp._library.cache_clear()
    assert local_cpp.available()
