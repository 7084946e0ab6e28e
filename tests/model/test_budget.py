import pytest
import torch

from catneuron.errors import UserError
from catneuron.model import budget
from catneuron.model.config import PRESETS


def test_the_memory_estimate_counts_the_batch_and_its_activations():
    model = PRESETS["small"].model
    weights_only = budget.training_bytes(model)
    assert budget.training_bytes(model, 100) > weights_only
    assert budget.training_bytes(model, 200) - budget.training_bytes(model, 100) == budget.activation_bytes(model, 100)
    # each image brings at least its own pixels, kept for the backward pass
    assert budget.activation_bytes(model, 1) >= 4 * model.channels * model.input_size**2


def test_a_batch_that_cannot_fit_is_refused_before_anything_is_allocated(monkeypatch):
    monkeypatch.setattr(budget, "available_bytes", lambda: 64 * 2**30)
    need = budget.training_bytes(PRESETS["tiny"].model, 100_000_000_000)
    with pytest.raises(UserError, match="needs at least"):
        budget.check_fits(need, "training")


def test_a_cuda_run_is_checked_against_the_devices_memory_not_the_hosts(monkeypatch):
    monkeypatch.setattr(budget, "available_bytes", lambda: 512 * 2**30)  # a big host
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    with pytest.raises(UserError, match="of CUDA memory; 8.0 GiB is available"):
        budget.check_fits(16 * 2**30, "training", torch.device("cuda"))
    budget.check_fits(16 * 2**30, "training", torch.device("cpu"))
