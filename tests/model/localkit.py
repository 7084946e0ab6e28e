"""The plain per-position loops the layer's products are checked against, and the shapes the checks cover."""

import torch


def loop_encode(x: torch.Tensor, weight: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Each position's filters against its window, fan-in ordered (row, column, channel)."""
    b, _, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = torch.zeros(b, weight.shape[1], oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * s:i * s + k, j * s:j * s + k].permute(0, 2, 3, 1).reshape(b, -1)
            out[:, :, i, j] = patch @ weight[i * ow + j].T
    return out


def loop_decode(codes: torch.Tensor, weight: torch.Tensor, c: int, size: tuple[int, int], k: int,
                s: int) -> torch.Tensor:
    b, _, oh, ow = codes.shape
    out = torch.zeros(b, c, *size, dtype=codes.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = codes[:, :, i, j] @ weight[i * ow + j]
            out[:, :, i * s:i * s + k, j * s:j * s + k] += patch.reshape(b, k, k, c).permute(0, 3, 1, 2)
    return out


SHAPES = [  # channels, (height, width), kernel, stride, maps, tile bytes (1: one window row per bmm)
    (1, (9, 9), 3, 1, 2, 1 << 20),
    (3, (10, 10), 4, 2, 3, 1 << 20),
    (2, (13, 13), 5, 3, 4, 1),
    (3, (12, 12), 5, 1, 2, 1),
    (3, (12, 12), 5, 1, 2, 2 * 8 * 8 * 15 * 3),  # two window rows per bmm, then one
    (4, (11, 11), 3, 2, 5, 1 << 20),
    (2, (9, 14), 4, 1, 3, 1),  # rectangular
    (2, (15, 8), 3, 2, 2, 1 << 20),
    (5, (12, 11), 5, 2, 1, 1 << 20),  # k not divisible by the stride; the last image row and column in no window
    (3, (11, 10), 2, 3, 2, 1 << 20),  # stride above the kernel: rows and columns between windows in none
    (1, (7, 20), 7, 1, 3, 1 << 20),  # one row of positions: every image row an edge row
]
