"""Checkpoints larger than one process should hold: written tensor by tensor, checked and read in pieces.

A model-parallel replica of the paper's model holds 3.8 GB of weights and as much again of Adagrad sums,
spread over its ranks. Rank 0 writes the checkpoint as the rows arrive (`write`), checks a checkpoint's
checksum by streaming the file (`verify`), and every rank reads back only the rows of positions it owns
(`read`). The file is the ordinary checkpoint (catneuron.store.checkpoint): safetensors with the same
names, metadata and checksum, so a single process loads it as any other.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from catneuron.errors import UserError
from catneuron.store import checkpoint
from catneuron.store.files import atomic

CODES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
         "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
DTYPES = {dtype: code for code, dtype in CODES.items()}
UNKNOWN = "crc32:" + "0" * 8  # the checksum's place in the header until the data is written
READ_BYTES = 1 << 26

Span = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    """One tensor of the file: its name, type and shape, and its bytes in order, as a callable that yields
    pieces (tensors of any shape whose elements, in order, are the tensor's)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    pieces: Callable[[], Iterable[Tensor]]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def write(path: str | Path, metadata: dict[str, str], entries: list[Entry]) -> None:
    """Write a checkpoint atomically, each entry's pieces as they come, in name order; the checksum
    (checkpoint.checksum's) is computed on the way and written into the header's reserved place at the end."""
    entries = sorted(entries, key=lambda e: e.name)
    header: dict = {}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": DTYPES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    header["__metadata__"] = metadata | {"checksum": UNKNOWN}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors aligns the data at 8 bytes
    crc = 0
    with atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for e in entries:
            crc = zlib.crc32(checkpoint.describe(e.name, e.dtype, e.shape), crc)
            written = 0
            for piece in e.pieces():
                data = piece.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
                crc = zlib.crc32(data, crc)  # type: ignore[arg-type]  # numpy's stubs: a buffer from Python 3.12
                f.write(data)  # type: ignore[arg-type]
                written += data.nbytes
            if written != e.nbytes:
                raise ValueError(f"{e.name}: {written} bytes written, {e.nbytes} expected")
        f.seek(8 + text.rindex(UNKNOWN.encode()))  # the last: __metadata__ comes last, checksum last in it
        f.write(f"crc32:{crc:08x}".encode())


def verify(path: str | Path) -> None:
    """Raise UserError unless the file's tensors match the checksum written with them (checkpoint.load's check,
    reading the file in pieces instead of loading it)."""
    path = Path(path)
    meta = checkpoint.read_metadata(path)
    if "checksum" not in meta:  # checkpoints before 0.3 have none
        return
    header, start = _header(path)
    crc = 0
    with open(path, "rb") as f:
        for name in sorted(header):
            info = header[name]
            crc = zlib.crc32(checkpoint.describe(name, CODES[info["dtype"]], tuple(info["shape"])), crc)
            first, last = info["data_offsets"]
            f.seek(start + first)
            while first < last:
                data = f.read(min(last - first, READ_BYTES))
                if not data:
                    raise UserError(f"{path}: damaged checkpoint (it ends inside tensor {name})")
                crc = zlib.crc32(data, crc)
                first += len(data)
    if f"crc32:{crc:08x}" != meta["checksum"]:
        raise UserError(f"{path}: damaged checkpoint (its tensors do not match the checksum written with them)")


def read(path: str | Path, cut: Callable[[str, tuple[int, ...]], list[Span] | None],
         into: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Every tensor of the file, each cut to the runs [a, b) of its first axis that `cut(name, shape)` gives
    (None: the whole tensor), the runs concatenated; only those rows are read. A tensor of `into` (the parameter
    or optimizer state they are for) receives its rows straight from the file where it can (contiguous, in CPU
    memory, of the rows' shape and type), else they go to a new tensor, as for the names `into` lacks. Nothing
    in between: no copy, no mapping of the file (whose touched pages count as the process's memory), so a
    rank resuming `paper` holds its blocks once."""
    header, start = _header(Path(path))
    into = into or {}
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            dtype, shape, first = CODES[info["dtype"]], tuple(info["shape"]), info["data_offsets"][0]
            runs = cut(name, shape)
            row = math.prod(shape[1:]) * dtype.itemsize
            spans = [(0, math.prod(shape) * dtype.itemsize)] if runs is None else [(a * row, b * row) for a, b in runs]
            wanted = shape if runs is None else (sum(b - a for a, b in runs), *shape[1:])
            target = into.get(name)
            if target is None or (target.device.type, tuple(target.shape), target.dtype) != ("cpu", wanted, dtype) \
                    or not target.is_contiguous():
                target = torch.empty(wanted, dtype=dtype)
            buffer = memoryview(target.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
            at = 0
            for lo, hi in spans:
                f.seek(start + first + lo)
                end = at + hi - lo
                while at < end:
                    got = f.readinto(buffer[at:end])
                    if not got:
                        raise UserError(f"{path}: damaged checkpoint (it ends inside tensor {name})")
                    at += got
            out[name] = target
    return out


def _header(path: Path) -> tuple[dict, int]:
    """The safetensors header's tensors (name: dtype, shape, data_offsets) and where their data starts."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            data = path.stat().st_size - 8 - size
            if data < 0:
                raise ValueError(f"a header of {size} bytes is longer than the file")
            header = json.loads(f.read(size))
        tensors = {name: info for name, info in header.items() if name != "__metadata__"}
        for name, info in tensors.items():
            first, last = info["data_offsets"]
            length = math.prod(info["shape"]) * CODES[info["dtype"]].itemsize
            if not 0 <= first <= last <= data or last - first != length:
                raise ValueError(f"tensor {name}: its bytes {first}..{last} do not hold its shape {info['shape']}")
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
    return tensors, 8 + size
