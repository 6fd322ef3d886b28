"""Checks that must fail on NaN and infinity (issue 10, item 3)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tnncompress.data import ClassificationData, TensorImageDataset
from tnncompress.errors import ExportError, NumericalError
from tnncompress.evaluate import evaluate
from tnncompress.export import to_onnx, verify
from tnncompress.io import read_checkpoint

from .conftest import SMALL_CNN, invoke


@pytest.fixture
def inf_checkpoint(tmp_path):
    state = load_file(SMALL_CNN)
    state["conv1.weight"][0, 0, 0, 0] = float("inf")  # the first conv: kept dense by every run
    path = tmp_path / "inf.safetensors"
    save_file(state, str(path), metadata={"arch": "tnncompress:small_cnn"})
    return path


def test_run_and_eval_refuse_non_finite_weights_naming_the_tensor(tmp_path, inf_checkpoint):
    for args in (["run", inf_checkpoint, "-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--out", tmp_path / "o"],
                 ["eval", inf_checkpoint, "--limit", "50"]):
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        assert "conv1.weight (1 of 144 values) not finite" in result.output
        assert "unexpected" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    # inspect only looks: it lists the tensor instead of refusing
    assert read_checkpoint(inf_checkpoint, allow_nonfinite=True).notes


class NaNAfter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).flatten(1) * float("nan")


def test_onnx_check_fails_on_nan_outputs():
    model = NaNAfter().eval()
    graph = to_onnx(model, (1, 5, 5))
    with pytest.raises(ExportError, match="not finite"):
        verify(graph, model, (1, 5, 5))


def test_evaluation_fails_on_nan_outputs():
    data = ClassificationData(TensorImageDataset(torch.zeros(4, 1, 5, 5, dtype=torch.uint8), torch.zeros(4), 0, 1),
                              18, (1, 5, 5), "zeros")
    with pytest.raises(NumericalError, match="samples 0-3 of zeros"):
        evaluate(NaNAfter().eval(), data)
