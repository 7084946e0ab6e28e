"""Damaged checkpoints are refused with one line saying what is wrong: metadata cut, mistyped or missing,
tensors of the wrong shape, bytes flipped (the checksum)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, safe_open, save_file

from catneuron.data.sources import ArraySource
from catneuron.errors import UserError
from catneuron.model.config import PRESETS
from catneuron.model.network import Network
from catneuron.store import checkpoint, runs
from catneuron.train.trainer import Trainer


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = Network(PRESETS["tiny"].model)
    path = runs.checkpoint_path(tmp_path / "run")
    path.parent.mkdir()
    checkpoint.save(path, PRESETS["tiny"], 7, net, torch.optim.Adagrad(net.parameters()))
    return path


def rewrite(path, meta_changes: dict | None = None, tensor_changes: dict | None = None) -> None:
    """The checkpoint again with some metadata fields (None: removed) or tensors replaced."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path)) | (tensor_changes or {})
    for key, value in (meta_changes or {}).items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    save_file(tensors, str(path), metadata=meta)


def one_line_refusal(call, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_a_good_checkpoint_round_trips_with_its_checksum(saved):
    with safe_open(str(saved), framework="pt") as f:
        assert f.metadata()["checksum"].startswith("crc32:")
    assert checkpoint.load(saved).step == 7


@pytest.mark.parametrize("change,match", [
    ({"config": '{"preset": "tiny", "model": {"input_'}, r"its config metadata is not valid JSON"),
    ({"config": "[1, 2]"}, r"its config metadata is not a mapping"),
    ({"config": '{"model": {"input_size": "big"}}'}, r"model.input_size must be a number"),
    ({"step": "abc"}, r"step 'abc' is not a count of steps"),
    ({"step": None}, r"its metadata has no 'step'"),
    ({"config": None}, r"its metadata has no 'config'"),
    ({"optimizer": "{cut"}, r"its optimizer metadata is not valid JSON"),
    ({"extra": "7"}, r"its extra metadata is not a mapping"),
])
def test_damaged_metadata_is_named(saved, change, match):
    rewrite(saved, change)
    one_line_refusal(lambda: Trainer.resume(saved.parent, source=None), match)
    one_line_refusal(lambda: runs.load_network(saved.parent), match)


def test_tensors_of_the_wrong_shape_or_missing_are_named(saved):
    weights = load_file(str(saved))
    name = next(k for k in weights if k.startswith("model."))
    rewrite(saved, {"checksum": None}, {name: torch.zeros(3, 3)})
    one_line_refusal(lambda: runs.load_network(saved.parent), rf"tensor {name} has shape \(3, 3\); its config needs")
    tensors = {k: v for k, v in load_file(str(saved)).items() if k != name}
    save_file(tensors, str(saved), metadata=dict(safe_open(str(saved), framework="pt").metadata()))
    one_line_refusal(lambda: runs.load_network(saved.parent), rf"tensor {name} is missing")


def test_flipped_tensor_bytes_fail_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header + 1000] ^= 0x40  # a bit in the middle of some tensor
    saved.write_bytes(bytes(data))
    one_line_refusal(lambda: checkpoint.load(saved), "its tensors do not match the checksum")


def test_a_checkpoint_without_a_checksum_still_loads(saved):
    rewrite(saved, {"checksum": None})
    assert json.loads(json.dumps(checkpoint.load(saved).extra)) == {}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_value_that_is_not_finite_is_found_in_any_piece_of_a_large_tensor(monkeypatch, bad):
    """non_finite checks a few elements at a time (not to allocate 1.7x the model's largest tensor): a bad value in
    the last, shorter piece of a non-contiguous tensor is found, as one in the first."""
    monkeypatch.setattr(checkpoint, "CHECK_ELEMENTS", 7)
    good = torch.ones(6, 10, dtype=torch.float64).t()  # 60 elements: 8 full pieces and one of 4
    assert checkpoint.non_finite({"a": good, "steps": torch.tensor([3])}) is None
    for index in (0, 31, 59):
        t = good.clone()
        t[index // 6, index % 6] = bad
        assert checkpoint.non_finite({"a": good, "b": t}) == "b"


def test_a_tensor_of_another_dtype_or_not_finite_is_refused_on_load(saved):
    """An int32 tensor with a valid checksum was cast silently, and a NaN weight was trained on when resumed: both
    refused by load_weights, which evaluation and resume both call."""
    net = Network(PRESETS["tiny"].model)
    name = sorted(checkpoint.load(saved).model)[0]
    weights = checkpoint.load(saved).model
    as_int = dict(weights, **{name: weights[name].to(torch.int32)})
    one_line_refusal(lambda: checkpoint.load_weights(net, as_int, saved),
                     rf"damaged checkpoint \(tensor model.{name} is int32; the network uses float32\)")
    with_nan = dict(weights, **{name: weights[name].clone().index_fill_(0, torch.tensor([0]), float("nan"))})
    one_line_refusal(lambda: checkpoint.load_weights(net, with_nan, saved),
                     rf"weights are not finite \(NaN or infinity in model.{name}\)")
    tensors = load_file(str(saved)) | {f"model.{name}": as_int[name]}
    rewrite(saved, {"checksum": checkpoint.checksum(tensors)}, tensors)  # a valid checksum
    source = ArraySource(np.zeros((4, 1, 16, 16), np.uint8), "zeros")
    one_line_refusal(lambda: Trainer.resume(saved.parent, source), f"model.{name} is int32")
