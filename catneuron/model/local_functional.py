"""The layer as functional ops with autograd, and the one place that chooses where its products run.

`locally_connected2d` and `local_decode` take and return torch's (B, C, H, W) layout; `backend` names the module
whose `contract`, `spread` and `correlate` a device and operand type use.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import threading
from types import ModuleType

import torch
from torch import Tensor

from catneuron.model import local_cpp, local_reference
from catneuron.model.local_reference import Geometry, accumulator


def backend(device: torch.device, dtype: torch.dtype) -> ModuleType:
    """Where contract, spread and correlate run: `triton_local`'s fused kernels for float32 or bfloat16 on CUDA where
    Triton is installed (the `gpu` extra), `local_cpp`'s compiled kernels for float32 and float64 on a CPU where a
    C++ compiler built them, `local_reference`'s sweeps everywhere else (bfloat16 on CPU included); the sweeps are
    the kernels' reference."""
    if device.type == "cuda" and dtype in (torch.float32, torch.bfloat16) and importlib.util.find_spec("triton"):
        return importlib.import_module("catneuron.model.triton_local")
    if device.type == "cpu" and dtype in local_cpp.DTYPES and local_cpp.available():
        return local_cpp
    return local_reference


class GradientMemory:
    """Memory for a layer's weight gradient, taken back step after step.

    A fresh tensor is new memory that the kernel maps page by page when it is first written: for the
    `paper` preset's 3.8 GB of weight gradients, ~900,000 page faults a step, seconds of system time
    (2 s per GB on this project's VM, more than the products' own time on some steps). The trainer frees
    the gradients every step (`zero_grad(set_to_none=True)`), so the next step's gradient takes the
    same memory back, provided no tensor holds it any more (the storage's use count); otherwise, or
    where PyTorch does not expose the count, it gets new memory, which is then the one kept.
    """

    def __init__(self) -> None:
        self._storage: torch.UntypedStorage | None = None
        self._lock = threading.Lock()  # two backward passes of one layer at once take different memory

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        with self._lock:
            kept = self._storage
            if (kept is not None and kept.device == device and kept.nbytes() == math.prod(shape) * dtype.itemsize
                    and hasattr(torch._C, "_storage_Use_Count") and torch._C._storage_Use_Count(kept._cdata) == 1):
                return torch.empty(0, dtype=dtype, device=device).set_(kept, 0, shape)  # type: ignore[call-overload]
            tensor = torch.empty(shape, dtype=dtype, device=device)
            self._storage = tensor.untyped_storage()
            return tensor

    def __reduce__(self) -> tuple:
        return GradientMemory, ()  # a copied or pickled layer starts with memory of its own



def _weight_grad(ops: ModuleType, image: Tensor, codes: Tensor, geo: Geometry, space: GradientMemory) -> Tensor:
    """`ops.correlate`; the CPU products write into the layer's reused memory (CUDA's caching allocator reuses its
    own)."""
    if ops is not local_reference and ops is not local_cpp:
        return ops.correlate(image, codes, geo)
    shape = (codes.shape[0], codes.shape[1], geo.kernel * geo.row_fan_in)
    return ops.correlate(image, codes, geo, space.empty(shape, accumulator(codes.dtype), codes.device))


class _Encode(torch.autograd.Function):
    """(H, W, C, B) image, (L, O, P) weights -> (L, O, B) codes; the products' operands of type `operands`."""

    @staticmethod
    def forward(ctx, image: Tensor, weight: Tensor, geo: Geometry, operands: torch.dtype,
                space: GradientMemory) -> Tensor:
        ctx.geo, ctx.operands, ctx.space = geo, operands, space
        image, weight = image.to(operands), weight.to(operands)
        ctx.save_for_backward(image, weight)
        return backend(image.device, operands).contract(image, weight, geo)

    @staticmethod
    def backward(ctx, grad_codes: Tensor):
        image, weight = ctx.saved_tensors
        grad_codes = grad_codes.contiguous().to(ctx.operands)
        ops = backend(grad_codes.device, ctx.operands)
        grad_image = ops.spread(grad_codes, weight, ctx.geo) if ctx.needs_input_grad[0] else None
        grad_weight = _weight_grad(ops, image, grad_codes, ctx.geo, ctx.space) if ctx.needs_input_grad[1] else None
        return grad_image, grad_weight, None, None, None


class _Decode(torch.autograd.Function):
    """(L, O, B) codes, (L, O, P) weights -> (H, W, C, B) image, overlapping windows summed."""

    @staticmethod
    def forward(ctx, codes: Tensor, weight: Tensor, geo: Geometry, operands: torch.dtype,
                space: GradientMemory) -> Tensor:
        ctx.geo, ctx.operands, ctx.space = geo, operands, space
        codes, weight = codes.to(operands), weight.to(operands)
        ctx.save_for_backward(codes, weight)
        return backend(codes.device, operands).spread(codes, weight, geo)

    @staticmethod
    def backward(ctx, grad_image: Tensor):
        codes, weight = ctx.saved_tensors
        grad_image = grad_image.contiguous().to(ctx.operands)
        ops = backend(grad_image.device, ctx.operands)
        grad_codes = ops.contract(grad_image, weight, ctx.geo) if ctx.needs_input_grad[0] else None
        grad_weight = _weight_grad(ops, grad_image, codes, ctx.geo, ctx.space) if ctx.needs_input_grad[1] else None
        return grad_codes, grad_weight, None, None, None




def to_batch_last(x: Tensor) -> Tensor:
    """(B, C, H, W) -> contiguous (H, W, C, B)."""
    return x.permute(2, 3, 1, 0).contiguous()


def from_batch_last(xt: Tensor) -> Tensor:
    """(H, W, C, B) -> contiguous (B, C, H, W)."""
    return xt.permute(3, 2, 0, 1).contiguous()


def locally_connected2d(input: Tensor, weight: Tensor, kernel_size: int, stride: int = 1, bias: Tensor | None = None,
                        operands: torch.dtype | None = None, tile_bytes: int = local_reference.TILE_BYTES,
                        grad_memory: GradientMemory | None = None, tf32: bool = False) -> Tensor:
    """(B, C, H, W) input, (positions, O, k*k*C) weight -> (B, O, out_h, out_w): a convolution without weight sharing.

    `operands` is the type the products take their operands in (default the input's); `tf32`: float32 products as
    TF32 on CUDA (ignored elsewhere); the output is of the input's
    type, as nn.Conv2d's (bfloat16 operands of float32 inputs: float32 sums, float32 output). `grad_memory` keeps the
    weight gradient's memory from step to step."""
    _same_type(input, weight)
    batch, channels, height, width = input.shape
    operands = operands or input.dtype
    geo = Geometry(height, width, channels, kernel_size, stride, batch, tile_bytes, torch.finfo(operands).bits // 8,
                   tf32)
    codes = _Encode.apply(to_batch_last(input), weight, geo, operands, grad_memory or GradientMemory())
    out = codes.permute(2, 1, 0).reshape(batch, weight.shape[1], geo.out_h, geo.out_w).to(input.dtype)
    return out if bias is None else out + bias


def _same_type(input: Tensor, weight: Tensor) -> None:
    """Refuse an input whose type is not the weights', worded as nn.Conv2d refuses it (no silent promotion)."""
    if input.dtype != weight.dtype:
        raise RuntimeError(f"Input type ({input.dtype}) and weight type ({weight.dtype}) should be the same")


def local_decode(codes: Tensor, weight: Tensor, input_size: tuple[int, int], kernel_size: int, stride: int = 1,
                 operands: torch.dtype | None = None, tile_bytes: int = local_reference.TILE_BYTES,
                 grad_memory: GradientMemory | None = None, tf32: bool = False) -> Tensor:
    """(B, O, out_h, out_w) codes, (positions, O, k*k*C) weight -> (B, C, *input_size): the adjoint of
    `locally_connected2d`, every window painted and overlaps summed."""
    _same_type(codes, weight)
    batch, maps = codes.shape[:2]
    channels = weight.shape[2] // (kernel_size * kernel_size)
    operands = operands or codes.dtype
    geo = Geometry(*input_size, channels, kernel_size, stride, batch, tile_bytes, torch.finfo(operands).bits // 8,
                   tf32)
    flat = codes.reshape(batch, maps, -1).permute(2, 1, 0).contiguous()
    return from_batch_last(_Decode.apply(flat, weight, geo, operands, grad_memory or GradientMemory())).to(codes.dtype)
