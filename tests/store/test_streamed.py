"""Checkpoints written tensor by tensor: the same file a single process reads, its checksum checked in pieces."""

from __future__ import annotations

import functools

import pytest
import torch

from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.store import checkpoint, streamed


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"model.b": torch.randn(10, 3, generator=g), "model.a": torch.randn(4, generator=g, dtype=torch.float64),
            "optim.0.step": torch.tensor(3.0), "rng.torch": torch.get_rng_state()}


def _write(path, tensors, meta) -> None:
    # each tensor in pieces of 7 elements (the last shorter), as rows arrive from the ranks
    entries = [streamed.Entry(name, t.dtype, tuple(t.shape),
                              functools.partial(lambda t: iter(t.reshape(-1).split(7)), t))
               for name, t in tensors.items()]
    streamed.write(path, meta, entries)


def test_a_streamed_checkpoint_is_the_single_process_format(tmp_path):
    tensors = _tensors()
    meta = checkpoint.metadata(PRESETS["tiny"], 5, {"data": "x"}, None)
    path = tmp_path / "ckpt.safetensors"
    _write(path, tensors, meta)
    loaded = checkpoint.load(path)  # checks the checksum, computed as checkpoint.save computes it
    assert loaded.step == 5 and loaded.extra == {"data": "x"}
    assert torch.equal(loaded.model["b"], tensors["model.b"]) and torch.equal(loaded.model["a"], tensors["model.a"])
    assert torch.equal(loaded.rng, tensors["rng.torch"])
    streamed.verify(path)
    rows = streamed.read(path, lambda name, shape: [(1, 3), (6, 8)] if name == "model.b" else None)
    assert torch.equal(rows["model.b"], tensors["model.b"][[1, 2, 6, 7]])
    assert torch.equal(rows["optim.0.step"], tensors["optim.0.step"])


def test_rows_are_read_into_the_tensors_given_where_they_fit(tmp_path):
    """Into a tensor of the rows' shape and type (its storage kept); one of another type, or not contiguous, is
    left alone and the rows come in a new tensor; a file cut inside a tensor is one line."""
    tensors = _tensors()
    path = tmp_path / "ckpt.safetensors"
    _write(path, tensors, checkpoint.metadata(PRESETS["tiny"], 5, None, None))
    rows, step, other = torch.zeros(4, 3), torch.zeros(()), torch.zeros(4, dtype=torch.float32)
    into = {"model.b": rows, "optim.0.step": step, "model.a": other}
    read = streamed.read(path, lambda name, shape: [(1, 3), (6, 8)] if name == "model.b" else None, into)
    assert read["model.b"] is rows and torch.equal(rows, tensors["model.b"][[1, 2, 6, 7]])
    assert read["optim.0.step"] is step and step.item() == 3.0
    assert read["model.a"] is not other and torch.equal(read["model.a"], tensors["model.a"]) and not other.any()
    assert torch.equal(streamed.read(path, lambda name, shape: None, {"model.b": torch.zeros(3, 10).t()})["model.b"],
                       tensors["model.b"])


def test_a_cut_file_or_a_header_longer_than_the_file_is_one_clear_error(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, PRESETS["tiny"], 3, {"w": torch.ones(100)})
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    with pytest.raises(UserError, match=r"not a readable checkpoint \(tensor .*: its bytes .* do not hold its shape"):
        streamed.read(path, lambda name, shape: None)
    path.write_bytes((2**63).to_bytes(8, "little") + whole[8:])
    with pytest.raises(UserError, match=r"not a readable checkpoint \(a header of 9223372036854775808 bytes"):
        streamed.read(path, lambda name, shape: None)


def test_verify_finds_a_flipped_byte_and_a_cut_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    checkpoint.save(path, PRESETS["tiny"], 1, {"w": torch.ones(100)})
    streamed.verify(path)
    data = bytearray(path.read_bytes())
    data[-200] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="do not match the checksum"):
        streamed.verify(path)


def test_a_short_writer_is_an_error_and_leaves_nothing(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    entry = streamed.Entry("model.w", torch.float32, (4,), lambda: iter([torch.zeros(3)]))
    with pytest.raises(ValueError, match="12 bytes written, 16 expected"):
        streamed.write(path, checkpoint.metadata(PRESETS["tiny"], 1, None, None), [entry])
    assert list(tmp_path.iterdir()) == []
