"""Network Lipschitz bounds: the upper bound holds against measured ratios and against the exact
constant of a linear network (the SVD of its dense matrix); operations without a rule are named."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.formats.layer import TensorizedLayer
from tnncompress.spectral.model import model_spectrum


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))
        self.skip = nn.AvgPool2d(2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.body(x) + self.skip(x)
        x = torch.cat([self.pool(x), self.pool(-x)], dim=1)
        return self.fc(torch.flatten(x, 1))


def _randomised(model):
    torch.manual_seed(0)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_var.uniform_(0.2, 2.0)
        bn.running_mean.normal_()
        bn.weight.data.normal_()
    return model.double().eval()


def test_upper_bound_holds_against_measured_ratios():
    model = _randomised(Residual())
    spec = model_spectrum(model, (2, 8, 8), pairs=64, power_iters=100)
    net = spec.network
    assert net.reason is None and net.upper is not None
    assert "stem" in spec.folded  # the batch norm after the stem is folded into it
    assert net.lower <= net.upper
    g = torch.Generator().manual_seed(5)
    x = torch.randn(256, 2, 8, 8, generator=g, dtype=torch.float64)
    y = x + 0.05 * torch.randn(256, 2, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ratios = (model(x) - model(y)).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratios.max()) <= net.upper


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        conv = nn.Conv2d(3, 3, 3, stride=2, padding=1, bias=False)
        self.b = TensorizedLayer.from_layer(conv, "tk", {"r1": 2, "r2": 2})

    def forward(self, x):
        return self.b(self.bn(self.a(x))).flatten(1)


def test_linear_network_bounds_bracket_the_exact_constant():
    model = _randomised(Linear())
    spec = model_spectrum(model, (2, 6, 6), power_iters=200)
    with torch.no_grad():
        zero = model(torch.zeros(1, 2, 6, 6, dtype=torch.float64))
        basis = torch.eye(72, dtype=torch.float64).reshape(72, 2, 6, 6)
        exact = float(torch.linalg.svdvals((model(basis) - zero).T)[0])
    assert spec.network.lower <= exact + 1e-9 <= spec.network.upper + 2e-9
    assert spec.network.lower >= 0.9 * exact  # the power-iteration pairs find the largest gain
    layers = {s.name: s for s in spec.layers}
    assert layers["b"].path == "core"


class Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return torch.sort(self.conv(x).flatten(1), dim=1).values


def test_an_operation_without_a_rule_is_named_and_layers_still_reported():
    spec = model_spectrum(Unknown().double(), (1, 4, 4))
    assert spec.network.upper is None
    assert "sort" in spec.network.reason
    assert len(spec.layers) == 1 and spec.network.lower > 0
