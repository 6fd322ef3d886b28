from pathlib import Path

import pytest
import torch

from tnncompress.compress import CompressConfig, compress_model, plan_model, select_layers
from tnncompress.data import BUNDLED_FASHION_MNIST, load_data
from tnncompress.io import load_model

CHECKPOINTS = Path(__file__).resolve().parents[2] / "tnncompress" / "models" / "checkpoints"
SMALL_CNN = CHECKPOINTS / "small_cnn_fashion_mnist.safetensors"


@pytest.fixture
def bundled_data(monkeypatch):
    """The bundled Fashion-MNIST (10k training images, the full test set), whatever this machine has."""
    monkeypatch.setenv("TNNCOMPRESS_DATA", str(BUNDLED_FASHION_MNIST))
    return load_data("fashion-mnist", "train"), load_data("fashion-mnist", "test")


def teacher_and_student(fmt: str = "mcp", rate: float = 0.2):
    """The trained small CNN and its Layer-Decomp student."""
    teacher = load_model(str(SMALL_CNN)).model.eval()
    plans = plan_model(teacher, select_layers(teacher, (1, 28, 28), [], []), CompressConfig(format=fmt, rate=rate))
    student, _ = compress_model(teacher, plans)
    return teacher, student


def states_close(a: torch.nn.Module, b: torch.nn.Module, rtol: float, atol: float) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), rtol=rtol, atol=atol)
                                          for k in sa)
