"""Configs: presets, YAML files, validation errors that name the field, sizes without allocation."""

import dataclasses

import pytest

from catneuron.errors import UserError
from catneuron.model import config as configs
from catneuron.model.budget import layer_rows, training_flops


def test_paper_preset_has_about_a_billion_parameters_without_allocating():
    rows = layer_rows(configs.PRESETS["paper"].model)
    total = sum(r.parameters for r in rows)
    assert 0.8e9 < total < 1.2e9
    assert rows[0].shape == "8x183x183"


def test_training_flops_skip_the_encoder_input_gradient_only_when_stages_are_detached():
    model = configs.PRESETS["small"].model
    rows = layer_rows(model)
    forward, encoders = sum(r.flops for r in rows), sum(r.flops for r in rows if r.sublayer == "filter (W1)")
    assert training_flops(model) == 3 * forward - encoders
    assert training_flops(dataclasses.replace(model, detach_stages=False)) == 3 * forward


def test_yaml_overrides_a_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nmodel:\n  sparsity: 0.3\ntrain:\n  lr: 0.01\n")
    cfg = configs.load(path)
    assert cfg.model.sparsity == 0.3 and cfg.train.lr == 0.01
    assert cfg.model.stages == configs.PRESETS["tiny"].model.stages


def test_precision_defaults_to_float32_and_reads_bf16(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\ntrain:\n  precision: bf16\n")
    assert configs.load(path).train.precision == "bf16"
    assert configs.PRESETS["paper"].train.precision == "float32"


@pytest.mark.parametrize("text,message", [
    ("model:\n  sparsty: 0.3\n", "unknown key 'sparsty'"),
    ("model:\n  channels: 2\n", "model.channels must be 1"),
    ("train:\n  optimizer: adam\n", "train.optimizer must be one of"),
    ("train:\n  precision: fp8\n", "train.precision must be one of float32, bf16"),
    ("train:\n  seed: -3\n", "train.seed must be >= 0, got -3"),
    ("train:\n  lr: fast\n", "lr must be a number"),
    ("model:\n  input_size: 6\n", "stage 1 kernel 8 exceeds its input size 6"),
    ("model:\n  stages:\n    - {maps: 2, kernel: 3, lcn_size: 4}\n", "lcn_size must be odd"),
    ("model: [1, 2\n", "not valid YAML"),
    ("preset: huge\n", "unknown preset"),
])
def test_bad_configs_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        configs.load(path)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        configs.load(tmp_path / "nope.yaml")
