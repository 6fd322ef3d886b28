"""The paths that run on an accelerator, on the device named by TNNCOMPRESS_TEST_DEVICE (default: cpu,
so they are tested on every machine; scripts/gpu_check.py runs them with "cuda"): a tensorial layer
against its dense kernel forward and backward, a measured plan, data-aware Layer-Decomp, distillation
steps and evaluation."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from tnncompress.calibrate import CalibrationPool
from tnncompress.compress import data_aware_init
from tnncompress.distill import Context, DistillConfig, KdData, distil
from tnncompress.evaluate import evaluate
from tnncompress.formats import TensorizedLayer, planned

DEVICE = os.environ.get("TNNCOMPRESS_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.skip("TNNCOMPRESS_TEST_DEVICE names CUDA, which this machine lacks", allow_module_level=True)


@pytest.mark.parametrize("fmt", ["cp", "tk", "mcp", "tt"])
@pytest.mark.parametrize("optimize", ["optimal", "measure"])
def test_a_tensorial_layer_matches_its_dense_kernel_forward_and_backward(fmt, optimize):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    ranks = {"cp": {"r": 6}, "tk": {"r1": 4, "r2": 4}, "mcp": None, "tt": None}[fmt]
    if ranks is None:
        from tnncompress.formats import KernelShape, get_format, tensorize
        shape = KernelShape(16, 16, 3, 3, 1)
        f = get_format(fmt)
        ranks = f.ranks_for_budget(shape, tensorize(16, 16) if f.reshaped else None, 600)
    layer = TensorizedLayer.from_layer(conv, fmt, ranks).to(DEVICE).double()
    x = torch.randn(4, 16, 9, 9, dtype=torch.float64, device=DEVICE, requires_grad=True)
    with planned(layer, optimize):
        y = layer(x)
    kernel = layer.format.rebuild(list(layer.factors), layer.shape, layer.tensorization)
    dense = nn.functional.conv2d(x, kernel.reshape(16, 16, 3, 3), layer.bias, padding=1)
    torch.testing.assert_close(y, dense, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, x, g)
    (want,) = torch.autograd.grad(dense, x, g)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def _models():
    from tests.distill.conftest import teacher_and_student
    return teacher_and_student("cp", 0.2)


@pytest.mark.slow
def test_data_aware_layer_decomp_lowers_every_layers_error_on_the_device():
    teacher, student = _models()
    teacher.to(DEVICE), student.to(DEVICE)
    torch.manual_seed(0)
    pool = CalibrationPool(torch.randn(96, 1, 28, 28), torch.zeros(96, dtype=torch.long), "noise")
    results = data_aware_init(teacher, student, pool, (1, 28, 28), batch_size=32)
    assert results and all(r.error_after <= r.error_before for r in results)
    assert all(p.device.type == torch.device(DEVICE).type for p in student.parameters())


@pytest.mark.slow
def test_distillation_steps_and_evaluation_on_the_device(monkeypatch):
    from tnncompress.data import BUNDLED_FASHION_MNIST, load_data

    monkeypatch.setenv("TNNCOMPRESS_DATA", str(BUNDLED_FASHION_MNIST))
    train, test = load_data("fashion-mnist", "train"), load_data("fashion-mnist", "test")
    teacher, student = _models()
    config = DistillConfig(algorithm="e2e", steps=12, eval_limit=256, plan="measure", batch_size=64)
    result = distil(teacher, student, KdData(train, test, (1, 28, 28)), config, Context(device=DEVICE))
    assert result.updates == 12 and result.device == DEVICE
    assert evaluate(student, test, device=DEVICE, limit=256).samples == 256
