from pathlib import Path

import pytest
import torch
import torchvision

CHECKPOINTS = Path(__file__).resolve().parents[2] / "tnncompress" / "models" / "checkpoints"


@pytest.fixture(scope="session")
def small_cnn_checkpoint() -> Path:
    return CHECKPOINTS / "small_cnn_fashion_mnist.safetensors"


@pytest.fixture(scope="session")
def resnet18_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised torchvision ResNet-18 state dict (no pretrained weights can be downloaded)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet18") / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    return path
