"""Locally connected layers as `torch.nn` modules: untied filters, one filter bank per output position.

PyTorch has no locally connected layer (pytorch#499). The modules hold the weights and check shapes; the work is
`local_functional`'s ops, whose products run where `local_functional.backend` says (`local_reference`'s sweeps on
CPU, Triton's fused kernels on CUDA). The fan-in of a filter is ordered (window row, window column, channel), as in
Keras' LocallyConnected2D.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from catneuron.model.local_functional import GradientMemory, local_decode, locally_connected2d
from catneuron.model.local_reference import TILE_BYTES, output_size, pair


def check_input(layer: nn.Module, x: Tensor, channels: int, size: tuple[int, int], what: str) -> bool:
    """Whether `x` is batched, (B, C, H, W), or unbatched, (C, H, W); any other shape than the layer's
    `channels` x `size` raises a RuntimeError worded like nn.Conv2d's."""
    name = type(layer).__name__
    if x.dim() not in (3, 4):
        raise RuntimeError(f"{name}: expected 3D (unbatched) or 4D (batched) {what}, but got {what} of size: "
                           f"{list(x.shape)}")
    c, h, w = x.shape[-3:]
    if c != channels:
        raise RuntimeError(f"{name}: expected {what}{list(x.shape)} to have {channels} channels, but got {c} "
                           f"channels instead")
    if (h, w) != size:
        raise RuntimeError(f"{name}: built for {size[0]}x{size[1]} {what}, expected {what}{list(x.shape)} to be "
                           f"{size[0]}x{size[1]}, but got {h}x{w} instead (a locally connected layer has one "
                           f"filter bank per position, so its {what} size is fixed)")
    return x.dim() == 4


class _Local(nn.Module):
    """What the encoder and the decoder share: shapes, and a (positions, out_channels, fan_in) weight."""

    def __init__(self, in_channels: int, out_channels: int, input_size: int | tuple[int, int], kernel_size: int,
                 stride: int, tile_bytes: int) -> None:
        super().__init__()
        self.input_size = pair(input_size)
        if kernel_size > min(self.input_size):
            raise ValueError(f"kernel_size {kernel_size} is larger than input_size {input_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.tile_bytes = kernel_size, stride, tile_bytes
        # bfloat16: the products of float32 inputs take bfloat16 operands and accumulate in float32
        self.operand_dtype: torch.dtype | None = None
        self.tf32 = False  # float32 products as TF32 on CUDA's tensor cores (`--precision tf32`)
        self.out_shape = (output_size(self.input_size[0], kernel_size, stride),
                          output_size(self.input_size[1], kernel_size, stride))
        self.fan_in = kernel_size * kernel_size * in_channels
        positions = self.out_shape[0] * self.out_shape[1]
        self.weight = nn.Parameter(torch.empty(positions, out_channels, self.fan_in))
        self.grad_memory = GradientMemory()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the initial weights: normal, with the spread `init_std` gives for the layer's role."""
        nn.init.normal_(self.weight, std=self.init_std())

    def init_std(self) -> float:
        """The initial weights' standard deviation (a model-parallel rank draws its block's rows with it)."""
        raise NotImplementedError

    def operands(self, dtype: torch.dtype) -> torch.dtype:
        """The type the products of `dtype` inputs take their operands in: `operand_dtype` for float32 inputs."""
        return self.operand_dtype if self.operand_dtype is not None and dtype == torch.float32 else dtype

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}")


class LocallyConnected2d(_Local):
    r"""A locally connected layer (the paper's W1): a convolution without weight sharing.

    Every output position (i, j) has its own bank of `out_channels` filters, each seeing a
    `kernel_size` x `kernel_size` window of all `in_channels` input maps; no padding. The forward pass is
    `local_functional.locally_connected2d`.

    Args:
        in_channels: channels of the input.
        out_channels: filters at each output position.
        input_size: the input's side, or (height, width): fixed, since every position has filters of its own.
        kernel_size: side of a window.
        stride: step between windows. Default: 1.
        bias: add an untied bias per output unit, drawn as nn.Conv2d draws its bias. Default: False, as in the
            paper's W1^T x (and as every catneuron stage uses it).
        tile_bytes: the size of the buffers the CPU sweeps copy small window rows into.

    Shape:
        - Input: (B, C_in, H, W) or (C_in, H, W), with (H, W) = `input_size`.
        - Output: (B, C_out, H_out, W_out) or (C_out, H_out, W_out), where
          H_out = floor((H - kernel_size) / stride) + 1 and W_out likewise.

    Attributes:
        weight: (H_out * W_out, C_out, kernel_size * kernel_size * C_in): positions row-major, fan-in ordered
            (window row, window column, channel). Initial values N(0, 1 / fan_in).
        bias: (C_out, H_out, W_out), or None.

    A wrong channel count or input size is a RuntimeError worded like nn.Conv2d's, and so is an input of another
    type than the weights; the output has the input's type (bfloat16 or float16 weights and inputs: outputs of
    that type, the products summed in float32).

    Not supported: `torch.jit.trace` and `torch.compile(fullgraph=True)`. On the CPU the products are sweeps of
    thousands of `bmm` calls over a pool of threads (workers.run_rows) writing into weight-gradient memory reused
    by storage use count (GradientMemory), inside an autograd Function whose arguments include that memory and the
    geometry: the tracer cannot record them, and dynamo breaks the graph there. On CUDA the products are
    `torch.ops.catneuron` ops (triton_local) that torch.compile and fake tensors see whole.

    Examples::

        >>> layer = LocallyConnected2d(3, 8, input_size=32, kernel_size=8, stride=2)
        >>> layer(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4, 8, 13, 13])
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int | tuple[int, int], kernel_size: int,
                 stride: int = 1, bias: bool = False, tile_bytes: int = TILE_BYTES) -> None:
        super().__init__(in_channels, out_channels, input_size, kernel_size, stride, tile_bytes)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, *self.out_shape))
            self._reset_bias()
        else:
            self.register_parameter("bias", None)

    def init_std(self) -> float:
        return 1.0 / math.sqrt(self.fan_in)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._reset_bias()

    def _reset_bias(self) -> None:
        if getattr(self, "bias", None) is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_channels, out_h, out_w); (C, H, W) -> (out_channels, out_h, out_w)."""
        batched = check_input(self, x, self.in_channels, self.input_size, "input")
        x = x if batched else x.unsqueeze(0)
        out = locally_connected2d(x, self.weight, self.kernel_size, self.stride, self.bias, self.operands(x.dtype),
                                  self.tile_bytes, self.grad_memory, self.tf32)
        return out if batched else out.squeeze(0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bias={self.bias is not None}"


class LocalDecoder(_Local):
    """The untied decoder (the paper's W2): codes back to input space, overlapping windows summed.

    `weight` has the encoder's shape, (positions, out_channels, k * k * in_channels): row (l, o) is
    the image patch that code o at position l paints. With the encoder's weight it is exactly the
    adjoint (transpose) of that `LocallyConnected2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: int | tuple[int, int], kernel_size: int,
                 stride: int = 1, tile_bytes: int = TILE_BYTES) -> None:
        super().__init__(in_channels, out_channels, input_size, kernel_size, stride, tile_bytes)

    def init_std(self) -> float:
        # Each input pixel is the sum over ~ceil(k/s)^2 windows of out_channels codes of about unit
        # size: this scale starts the reconstruction at the input's own magnitude, not far above it.
        overlap = math.ceil(self.kernel_size / self.stride) ** 2
        return 1.0 / math.sqrt(self.out_channels * overlap)

    def forward(self, codes: Tensor) -> Tensor:
        """(B, out_channels, out_h, out_w) -> (B, in_channels, height, width); unbatched as well."""
        batched = check_input(self, codes, self.out_channels, self.out_shape, "codes")
        codes = codes if batched else codes.unsqueeze(0)
        image = local_decode(codes, self.weight, self.input_size, self.kernel_size, self.stride,
                             self.operands(codes.dtype), self.tile_bytes, self.grad_memory, self.tf32)
        return image if batched else image.squeeze(0)
