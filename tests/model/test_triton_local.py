"""The fused Triton kernels against `local`'s sweeps: compiled on CUDA where there is a GPU, else in Triton's
interpreter on CPU (TRITON_INTERPRET=1, set while this module's kernels are defined and run, and only then)."""

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from catneuron.model import local_cpp, local_functional, local_reference
from catneuron.model.local import LocalDecoder, LocallyConnected2d
from catneuron.model.local_functional import backend
from catneuron.model.local_reference import Geometry

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install -e '.[gpu]')", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def interpreted():
    """TRITON_INTERPRET=1 where there is no GPU, restored after: Triton reads it when a kernel is defined and run."""
    with pytest.MonkeyPatch.context() as env:
        if DEVICE == "cpu":
            env.setenv("TRITON_INTERPRET", "1")
        yield


def _import_kernels():
    """The kernels module, imported here first (its ops are registered once per process, so it cannot be defined anew
    interpreted if something imported it before)."""
    name = "catneuron.model.triton_local"
    assert DEVICE == "cuda" or name not in sys.modules, f"{name} was imported before these tests: not interpreted"
    with interpreted():
        return importlib.import_module(name)


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    with interpreted():
        yield


tk = _import_kernels()
Blocks = tk.Blocks
# The interpreter runs tiles one by one, slowly: there, few large tiles. A GPU compiles such tiles badly: the defaults.
ONE_TILE = Blocks(positions=64, batch=64, fan_in=64, row=64, windows=16) if DEVICE == "cpu" else Blocks()
SMALL = Blocks(positions=4, batch=16, fan_in=16, row=16, windows=4)  # a GPU's bfloat16 dot needs a reduction >= 16

CASES = [  # channels, (height, width), kernel, stride, maps, batch, tile sizes
    (1, (8, 8), 3, 1, 2, 3, ONE_TILE),
    (3, (9, 9), 3, 2, 3, 5, ONE_TILE),
    (2, (7, 10), 4, 2, 8, 4, ONE_TILE),  # rectangular, the last column of pixels in no window
    (4, (6, 7), 2, 1, 5, 2, ONE_TILE),
    (2, (6, 7), 3, 1, 3, 20, SMALL),  # many tiles, ragged ones
]


def operands(c, size, k, s, maps, batch, dtype=torch.float32, seed=0):
    """A geometry and random (H, W, C, B) image, (L, O, P) weight and (L, O, B) codes for it."""
    gen = torch.Generator().manual_seed(seed)
    geo = Geometry(*size, c, k, s, batch, local_reference.TILE_BYTES, 4)
    positions, fan_in = geo.out_h * geo.out_w, k * k * c
    image, weight, codes = (torch.randn(shape, generator=gen).to(DEVICE, dtype)
                            for shape in ((*size, c, batch), (positions, maps, fan_in), (positions, maps, batch)))
    return geo, image, weight, codes


def reference(name, *tensors, geo):
    """The sweep's result, in float32 from the same (possibly bfloat16-rounded) operands."""
    return getattr(local_reference, name)(*(t.detach().float() for t in tensors), geo)


@pytest.mark.parametrize("c,size,k,s,maps,batch,blocks", CASES)
def test_products_match_the_sweeps_in_float32(c, size, k, s, maps, batch, blocks):
    geo, image, weight, codes = operands(c, size, k, s, maps, batch)
    for name, args in (("contract", (image, weight)), ("spread", (codes, weight)), ("correlate", (image, codes))):
        got = getattr(tk, name)(*args, geo, blocks)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, reference(name, *args, geo=geo), rtol=1e-5, atol=1e-4, msg=name)


@pytest.fixture
def bfloat16_dot(monkeypatch):
    """Triton's interpreter multiplies bfloat16 operands as their raw uint16 bits (numpy has no bfloat16). Decode them
    first: bfloat16 products are exact in float32, summed in float32, as a GPU's tensor cores do."""
    if DEVICE == "cuda":
        return
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    def as_float32(handle):
        return TensorHandle((handle.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    dot = InterpreterBuilder.create_dot

    def create_dot(self, a, b, *rest):
        if a.dtype.scalar == tl.bfloat16 and a.data.dtype == np.uint16:
            a, b = as_float32(a), as_float32(b)
        return dot(self, a, b, *rest)

    monkeypatch.setattr(InterpreterBuilder, "create_dot", create_dot)


@pytest.mark.parametrize("c,size,k,s,maps,batch,blocks", [CASES[1], CASES[4]])
def test_products_take_bfloat16_and_sum_in_float32(c, size, k, s, maps, batch, blocks, bfloat16_dot):
    geo, image, weight, codes = operands(c, size, k, s, maps, batch, torch.bfloat16, seed=1)
    for name, args in (("contract", (image, weight)), ("spread", (codes, weight)), ("correlate", (image, codes))):
        got = getattr(tk, name)(*args, geo, blocks)
        assert got.dtype == torch.float32  # as the CPU sweeps give: the network's activations stay float32
        want = reference(name, *args, geo=geo)
        # bfloat16 products are exact in float32: the sums differ from the sweeps' by their order only
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4, msg=name)


def test_mixed_or_unsupported_dtypes_are_refused():
    geo, image, weight, _ = operands(1, (8, 8), 3, 1, 2, 3)
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        tk.contract(image.bfloat16(), weight, geo)
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        tk.contract(image.double(), weight.double(), geo)


@pytest.mark.parametrize("s", [1, 2])
def test_layers_train_through_the_kernels_as_through_the_sweeps(s, monkeypatch):
    """Encoder and decoder, forward and both gradients, with the kernels dispatched as on CUDA."""
    torch.manual_seed(3)
    enc = LocallyConnected2d(3, 4, (7, 8), 3, s).to(DEVICE)
    dec = LocalDecoder(3, 4, (7, 8), 3, s).to(DEVICE)
    x = torch.randn(5, 3, 7, 8, device=DEVICE, requires_grad=True)

    def run():
        loss = dec(enc(x)).square().sum()
        return (loss, *torch.autograd.grad(loss, (x, enc.weight, dec.weight)))

    monkeypatch.setattr(local_functional, "backend", lambda device, dtype: local_reference)
    want = run()
    monkeypatch.setattr(local_functional, "backend", lambda device, dtype: tk)
    for got, ref in zip(run(), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_cuda_float32_and_bfloat16_go_to_the_kernels_the_cpu_to_the_compiled_kernels_or_the_sweeps():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert backend(cuda, torch.float32) is tk
    assert backend(cuda, torch.bfloat16) is tk
    assert backend(cuda, torch.float64) is local_reference
    assert backend(cpu, torch.float32) is (local_cpp if local_cpp.available() else local_reference)
    assert backend(cpu, torch.bfloat16) is local_reference


@pytest.mark.slow
def test_kernels_compile_for_a_hopper_gpu_on_tensor_cores_without_spills():
    """benchmarks/gpu_compile.py builds the kernels as launched, ahead of time for sm_90 (H100, H200) with no GPU, so
    CI builds the CUDA path, not only its interpretation (in a fresh process: an interpreting Triton cannot compile)."""
    import triton

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this Triton has no CUDA backend")
    root = Path(__file__).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_compile.py"), "--arch", "90", "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout
    rows = json.loads(out)
    assert {(row["dtype"], row["kernel"]) for row in rows} == {
        (dtype, kernel) for dtype in ("float32", "bf16") for kernel in ("contract", "spread", "correlate")}
    for row in rows:
        assert row["stack_bytes"] == 0, row
        if row["dtype"] == "bf16":
            assert "bf16" in row["tensor_cores"], row


def test_the_ops_differentiate_as_their_adjoints():
    """torch.ops.catneuron's registered autograd: each product's gradients are the other two products."""
    geo, image, weight, codes = operands(*CASES[1][:6])
    image, weight, codes = (t.requires_grad_() for t in (image, weight, codes))
    up = {"contract": codes.detach(), "spread": image.detach(), "correlate": weight.detach()}
    adjoints = {  # the op, its operands, and the gradients each operand must get
        "contract": ((image, weight), (("spread", up["contract"], weight), ("correlate", image, up["contract"]))),
        "spread": ((codes, weight), (("contract", up["spread"], weight), ("correlate", up["spread"], codes))),
        "correlate": ((image, codes), (("spread", codes, up["correlate"]), ("contract", image, up["correlate"]))),
    }
    for name, (args, wants) in adjoints.items():
        out = getattr(tk, name)(*args, geo, ONE_TILE)
        grads = torch.autograd.grad(out, args, up[name])
        for got, (product, *tensors) in zip(grads, wants, strict=True):
            torch.testing.assert_close(got, reference(product, *tensors, geo=geo), rtol=1e-5, atol=1e-4,
                                       msg=f"{name} -> {product}")


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_geometry_launches_the_tf32_dot_and_stays_close(tf32, monkeypatch):
    """`--precision tf32`: the geometry asks the kernels for tl.dot's TF32 mode on float32 operands (IEEE otherwise);
    the interpreter multiplies in float32 either way, so the values are checked at TF32's tolerance."""
    geo, image, weight, codes = operands(*CASES[1][:6])
    geo = Geometry(**{**geo.__dict__, "tf32": tf32})
    modes = []
    launch = tk._launch
    monkeypatch.setattr(tk, "_launch", lambda kernel, grid, *args, warps: (modes.append(args[-5]),
                                                                        launch(kernel, grid, *args, warps=warps)))
    with monkeypatch.context() as m:
        m.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
        for name, args in (("contract", (image, weight)), ("spread", (codes, weight)), ("correlate", (image, codes))):
            got = getattr(tk, name)(*args, geo, ONE_TILE)
            torch.testing.assert_close(got, reference(name, *args, geo=geo), rtol=2e-3, atol=2e-3, msg=name)
    assert modes == ["tf32" if tf32 else "ieee"] * 3


def test_the_network_asks_for_tf32_only_with_precision_tf32():
    from catneuron.model.config import PRESETS
    from catneuron.model.network import Network

    network = Network(PRESETS["tiny"].model)
    layers = [m for m in network.modules() if isinstance(m, (LocallyConnected2d, LocalDecoder))]
    network.set_precision("tf32")
    assert all(m.tf32 and m.operand_dtype is None for m in layers)
    network.set_precision("bf16")
    assert not any(m.tf32 for m in layers)
