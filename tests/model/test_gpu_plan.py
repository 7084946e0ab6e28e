import pytest
import torch

from catneuron.model import gpu_plan


def test_known_gpus_peaks_by_precision():
    assert gpu_plan.peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 67.0
    assert gpu_plan.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert gpu_plan.peak_tflops("NVIDIA A100-SXM4-40GB", "tf32") == 156.0
    assert gpu_plan.peak_tflops("Some Future GPU", "float32") is None


def test_utilisation_is_achieved_flops_over_the_gpus_peak(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    # 2,778 paper images/s at 6 GFLOP each: 16.7 TFLOP/s, a quarter of the H100's FP32 peak
    assert gpu_plan.utilisation(2778, 6e9, torch.device("cuda"), "float32") == pytest.approx(24.88, abs=0.01)
    assert gpu_plan.utilisation(2778, 6e9, torch.device("cpu"), "float32") is None
