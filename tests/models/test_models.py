"""The zoo: parameter counts of the ResNet paper, shapes, and the option-A shortcut."""

from __future__ import annotations

import pytest
import torch

from tnncompress.models import create_model, get_entry, list_models
from tnncompress.models.resnet_cifar import CifarResNet, PadShortcut


@pytest.mark.parametrize("name, params", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6)])
def test_resnet_parameter_counts_match_the_paper(name, params):
    n = sum(p.numel() for p in create_model(name).parameters())
    assert abs(n - params) / params < 0.02


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shapes(name, channels):
    model = create_model(name, num_classes=7, in_channels=channels).eval()
    _, h, w = get_entry(name).input_size
    assert model(torch.randn(2, channels, h, w)).shape == (2, 7)


def test_pad_shortcut_is_subsample_and_zero_pad():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(33)
