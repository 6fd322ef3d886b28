"""The operation table and its walker: one declaration per operation serves both analyses, a module call
and the functional call it stands for get the same rule, slopes are certified against the derivative,
and a new operation declared in one place reaches the Lipschitz bound and moment propagation both."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.bayes.propagate import Propagator, fixed_weights
from tnncompress.errors import UsageError
from tnncompress.ops import OPERATIONS, Gauss, Operation, Operations
from tnncompress.spectral.lipschitz import BoundUnavailable, upper_bound


def test_an_operation_is_declared_once():
    ops = Operations()
    ops.add(Operation("a", functions=(torch.relu,)))
    with pytest.raises(ValueError, match="declared twice"):
        ops.add(Operation("b", functions=(torch.relu,)))


class _Pools(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool, self.avg = nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2)
        self.act, self.bn = nn.ELU(alpha=1.5), nn.BatchNorm2d(3)

    def forward(self, x):
        x = self.conv(x)
        if self.functional:  # as timm's norm-and-activation layers call it
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.1, bn.eps)
            return F.avg_pool2d(F.elu(F.max_pool2d(x, 3, 2, 1), 1.5), 2).flatten(1)
        return self.avg(self.act(self.pool(self.bn(x)))).flatten(1)


def test_a_module_and_its_functional_call_are_one_operation_with_the_same_rules():
    torch.manual_seed(0)
    module, functional = _Pools(False).double().eval(), _Pools(True).double().eval()
    module.bn.running_var.uniform_(0.2, 2.0), module.bn.weight.data.normal_()
    functional.load_state_dict(module.state_dict())
    sigma = {"conv": 1.7}
    assert upper_bound(module, sigma, (2, 8, 8)) == upper_bound(functional, sigma, (2, 8, 8)) > 0
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    a = Propagator(module)(x, fixed_weights, x_var=0.2 * torch.ones_like(x))
    b = Propagator(functional)(x, fixed_weights, x_var=0.2 * torch.ones_like(x))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.var, b.var)


@pytest.mark.parametrize("name", ["gelu", "silu", "mish", "hardswish", "sigmoid", "softplus", "hardsigmoid", "elu",
                                  "leaky relu"])
def test_every_activation_slope_bounds_its_derivative(name):
    op = next(o for o in OPERATIONS if o.name == name)
    fn = op.functions[0]
    x = torch.linspace(-12, 12, 400_001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(fn(x).sum(), x)
    declared = op.rules["lipschitz"](_FakeCall(op, 1.0), None)
    assert float(slope.abs().max()) <= declared <= float(slope.abs().max()) * 1.001 + 1e-12


class _FakeCall:
    def __init__(self, op, bound):
        from types import SimpleNamespace
        self.a = SimpleNamespace(input=bound, **op.defaults)


class Doubler(nn.Module):
    """A module the analyses do not know: y = 2x."""

    traced_as_leaf = True

    def forward(self, x):
        return 2 * x


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.twice = nn.Conv2d(1, 2, 3, padding=1), Doubler()

    def forward(self, x):
        return self.twice(self.conv(x)).flatten(1)


def test_a_new_operation_declared_in_one_place_reaches_both_analyses(monkeypatch):
    torch.manual_seed(0)
    net = _Net().double().eval()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(BoundUnavailable, match="twice"):
        upper_bound(net, {"conv": 1.0}, (1, 4, 4))
    with pytest.raises(UsageError, match="layer 'twice' \\(Doubler\\)"):
        Propagator(net)
    table = OPERATIONS.copy()
    table.add(Operation("doubling", modules=(Doubler,), rules={
        "lipschitz": lambda c, it: 2 * c.a.input,
        "moments": lambda c, it: Gauss(2 * c.a.input.mean, None if c.a.input.var is None else 4 * c.a.input.var)}))
    for module in ("tnncompress.spectral.lipschitz", "tnncompress.bayes.propagate"):
        monkeypatch.setattr(f"{module}.OPERATIONS", table)
    assert upper_bound(net, {"conv": 1.5}, (1, 4, 4)) == 3.0
    var = torch.full_like(x, 0.3)
    out = Propagator(net)(x, fixed_weights, x_var=var)
    w = net.conv.weight
    expected_var = 4 * F.conv2d(var, w * w, padding=1).flatten(1)  # a linear map of independent inputs
    assert torch.allclose(out.mean, net(x)) and torch.allclose(out.var, expected_var)


class _Checked(nn.Module):
    """Traced code's shape assertion (as timm's layers carry) and a division by a constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        torch._assert(x.shape[1] == 1, "one channel")
        return (self.conv(x) / 4.0).flatten(1)


class _Ratio(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return (y / y).flatten(1)  # a divisor that is a value of the graph


def test_shape_assertions_are_constants_and_a_constant_divisor_scales():
    torch.manual_seed(0)
    net = _Checked().double().eval()
    assert upper_bound(net, {"conv": 2.0}, (1, 4, 4)) == 0.5
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    var = torch.full_like(x, 0.3)
    out = Propagator(net)(x, fixed_weights, x_var=var)
    w = net.conv.weight
    assert torch.allclose(out.mean, net(x)) and torch.allclose(out.var, F.conv2d(var, w * w, padding=1).flatten(1) / 16)
    ratio = _Ratio().double().eval()
    with pytest.raises(BoundUnavailable, match="truediv"):
        upper_bound(ratio, {"conv": 1.0}, (1, 4, 4))
