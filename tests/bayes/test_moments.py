"""Analytic moments against Monte Carlo: each propagated operation's output mean and variance, with the
weights sampled from their categorical posterior and the inputs from independent Gaussians."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.bayes.propagate import Gauss, Propagator
from tnncompress.einsum import contract_expression
from tnncompress.einsum.moments import expression_moments
from tnncompress.ops import moments as rules

from .montecarlo import SAMPLES
from .montecarlo import draw as _draw
from .montecarlo import gaussian_input as _gaussian_input
from .montecarlo import posterior as _posterior
from .montecarlo import weight_samples as _weight_samples
from .montecarlo import within as _within


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2)])
def test_convolution_with_random_weights_and_inputs(stride, groups):
    post = _posterior((4, 4 // groups, 3, 3))
    mx, vx = _gaussian_input((1, 4, 5, 5))
    got = rules.weighted(lambda a, w: F.conv2d(a, w, stride=stride, padding=1, groups=groups), (mx, vx),
                         post.moments())
    g = torch.Generator().manual_seed(2)
    n = SAMPLES // 4
    w, x = _weight_samples(post, n, g), _draw(mx, vx, n, g)
    mc = torch.stack([F.conv2d(x[i], w[i], stride=stride, padding=1, groups=groups)[0] for i in range(n)])
    _within(mc, got[0][0], got[1][0], share=0)  # outputs of a channel share its sampled weights


def test_linear_layer_with_random_weights_and_inputs():
    post = _posterior((3, 6))
    mx, vx = _gaussian_input((1, 6))
    mean, var = rules.weighted(F.linear, (mx, vx), post.moments(), bias=torch.ones(3, dtype=torch.float64))
    g = torch.Generator().manual_seed(3)
    w, x = _weight_samples(post, SAMPLES, g), _draw(mx, vx, SAMPLES, g)
    mc = torch.einsum("nos,nbs->nbo", w, x) + 1
    _within(mc[:, 0], mean[0], var[0], share=0)


def test_one_conv_einsum_step_is_exact_and_a_whole_plan_keeps_the_mean():
    """A step (input x factor) gives the exact moments; across steps the mean stays exact."""
    mx, vx = _gaussian_input((1, 4, 5, 5))
    a, b = _posterior((3, 4), seed=4), _posterior((5, 3, 3, 3), seed=5)  # an input frame, then a core conv
    first = contract_expression("bshw,rs->brhw", mx.shape, (3, 4))
    mean, var = expression_moments(first, (mx, vx), a.moments())
    g = torch.Generator().manual_seed(6)
    n = SAMPLES // 4
    ws, x = _weight_samples(a, n, g), _draw(mx, vx, n, g)
    mc = torch.einsum("nbshw,nrs->nbrhw", x, ws)
    _within(mc[:, 0], mean[0], var[0], share=0)  # entries share the sampled frame
    chain = contract_expression("bshw,rs,trhw->bthw|hw", mx.shape, (3, 4), (5, 3, 3, 3), padding=1)
    mean, var = expression_moments(chain, (mx, None), a.moments(), b.moments())
    wb = _weight_samples(b, n, g)
    mc = torch.stack([chain(mx, ws[i], wb[i])[0] for i in range(n)])
    m, v = mc.mean(0), mc.var(0)
    assert float(((m - mean[0].detach()).abs() / (v / n).sqrt()).max()) < 4.5
    # mean field treats the intermediate's entries as independent: the variance is approximate, and
    # its error is bounded here to catch a wrong rule (a missing term is off by far more)
    ratio = var[0].detach() / v
    assert 0.5 < float(ratio.median()) < 2.0


def test_relu_of_a_gaussian():
    mean, var = _gaussian_input((200,))
    mean = mean * 2  # both signs, several scales
    got = rules.relu((mean, var))
    g = torch.Generator().manual_seed(7)
    _within(F.relu(_draw(mean, var, SAMPLES, g)), *got)


def test_max_of_two_gaussians_is_clarks_exact_moments_and_a_window_is_close():
    mean, var = _gaussian_input((1, 3, 4, 6))
    got = rules.max_pool((mean, var), (1, 2))
    g = torch.Generator().manual_seed(8)
    mc = F.max_pool2d(_draw(mean, var, SAMPLES, g).flatten(0, 1), (1, 2)).view(SAMPLES, *got[0].shape)
    _within(mc, *got)
    got = rules.max_pool((mean, var), 2, ceil_mode=True)  # a max of 4 (and a ceil-mode edge of 2): approximate
    mc = F.max_pool2d(_draw(mean, var, SAMPLES, g).flatten(0, 1), 2, ceil_mode=True).view(SAMPLES, *got[0].shape)
    torch.testing.assert_close(got[0], mc.mean(0), rtol=0.05, atol=0.03)
    torch.testing.assert_close(got[1], mc.var(0), rtol=0.15, atol=0.02)


@pytest.mark.parametrize("pool", ["avg", "avg-pad", "adaptive"])
def test_average_poolings(pool):
    mean, var = _gaussian_input((1, 2, 5, 7))
    fns = {"avg": lambda t: F.avg_pool2d(t, 2), "avg-pad": lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
           "adaptive": lambda t: F.adaptive_avg_pool2d(t, (2, 3))}
    got = {"avg": lambda m: rules.avg_pool(m, 2),
           "avg-pad": lambda m: rules.avg_pool(m, 3, 2, 1, count_include_pad=False),
           "adaptive": lambda m: rules.adaptive_avg_pool(m, (2, 3))}[pool]((mean, var))
    g = torch.Generator().manual_seed(9)
    x = _draw(mean, var, SAMPLES, g).flatten(0, 1)
    mc = fns[pool](x).view(SAMPLES, *got[0].shape)
    _within(mc, *got)


def test_batch_norm_and_a_residual_sum():
    bn = nn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    a, b = _gaussian_input((1, 3, 2, 2), 10), _gaussian_input((1, 3, 2, 2), 11)
    mean, var = rules.add(rules.batch_norm(a, bn), b)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        mc = bn(_draw(*a, SAMPLES, g).flatten(0, 1)).view(SAMPLES, 1, 3, 2, 2) + _draw(*b, SAMPLES, g)
    _within(mc, mean.detach(), var.detach())


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = F.max_pool2d(y + F.relu(y), 2)
        return self.fc(torch.flatten(y, 1))


def test_the_propagator_with_fixed_weights_is_the_forward_pass():
    net = _Net().double().eval()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    out = Propagator(net)(x, lambda name, p: (p, None))
    assert isinstance(out, Gauss) and out.var is None
    torch.testing.assert_close(out.mean, net(x), rtol=0, atol=1e-12)


def test_an_operation_without_a_rule_is_named_before_any_work():
    from tnncompress.errors import UsageError

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(1), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(UsageError, match=r"layer '1' \(Softmax\)"):
        Propagator(net)


SMOOTH = [nn.SiLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.Sigmoid(), nn.Tanh(), nn.Softplus(),
          nn.Mish()]
KINKED = [nn.ELU(), nn.Hardswish(), nn.ReLU6(), nn.LeakyReLU(0.1), nn.Hardtanh(), nn.Hardsigmoid()]


def _integral(f, mean, var):
    """E[f(h)] and Var[f(h)], h ~ N(mean, var), by the trapezoid rule on 20,001 points over +-10 sigma."""
    z = torch.linspace(-10, 10, 20_001, dtype=torch.float64)
    pdf = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    y = f(mean[..., None] + var.sqrt()[..., None] * z)
    m = (y * pdf).sum(-1)
    return m, ((y - m[..., None]) ** 2 * pdf).sum(-1)


@pytest.mark.parametrize("activation", SMOOTH + KINKED, ids=repr)
def test_elementwise_activations_of_a_gaussian(activation):
    mean, var = _gaussian_input((6, 50), 13)
    mean = 3 * mean  # the kinks of hard-swish and ReLU6 are at -3, 0 and 3
    got = rules.elementwise(activation, (mean, var))
    g = torch.Generator().manual_seed(14)
    reference = _integral(activation, mean, var)
    if activation in SMOOTH:  # quadrature is exact to rounding for a smooth function
        _within(activation(_draw(mean, var, SAMPLES, g)), *got)
        torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-8)
    else:  # near a kink it is approximate, within the bound the rule's docstring states
        assert float(((got[0] - reference[0]).abs() / var.sqrt()).max()) < 0.02
        assert float(((got[1] - reference[1]).abs() / var).max()) < 0.03


def test_a_product_of_independent_values_and_a_mean_over_positions():
    a, b = _gaussian_input((2, 3, 4, 4), 15), _gaussian_input((2, 3, 1, 1), 16)  # an input and its gate
    g = torch.Generator().manual_seed(17)
    xa, xb = _draw(*a, SAMPLES, g), _draw(*b, SAMPLES, g)
    _within(xa * xb, *rules.product(a, b), share=0)  # entries share their channel's gate
    mean, var = rules.reduce_mean(a, (2, 3), keepdim=True)
    _within(xa.mean((3, 4), keepdim=True), mean, var)


class _SqueezeExcite(nn.Module):
    """An EfficientNet block's shape: conv, SiLU, a squeeze-excite gate (mean, 1x1 convs, sigmoid,
    product), GELU head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.reduce, self.expand = nn.Conv2d(4, 2, 1), nn.Conv2d(2, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = F.silu(self.conv(x))
        gate = self.expand(F.silu(self.reduce(y.mean((2, 3), keepdim=True)))).sigmoid()
        y = y * gate
        return self.fc(F.gelu(torch.mean(y, dim=(2, 3))))


@pytest.mark.slow
def test_a_squeeze_excite_network_propagates_its_forward_pass_and_near_monte_carlo():
    torch.manual_seed(0)
    net = _SqueezeExcite().double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    fixed = Propagator(net)(x, lambda name, p: (p, None))
    assert fixed.var is None
    torch.testing.assert_close(fixed.mean, net(x), rtol=0, atol=1e-12)
    post = _posterior((4, 2, 3, 3), seed=18)
    out = Propagator(net)(x, lambda name, p: post.moments() if name == "conv.weight" else (p, None))
    g = torch.Generator().manual_seed(19)
    n = SAMPLES // 4
    w = _weight_samples(post, n, g)
    from torch.func import functional_call
    with torch.no_grad():
        mc = torch.stack([functional_call(net, {"conv.weight": w[i]}, (x,)) for i in range(n)])
    # mean field ignores that the gate and its input share weights: the mean stays close, not exact. The
    # variance is not compared: every output here averages 25 positions driven by the same sampled kernel,
    # which mean field counts as independent (the rules themselves are checked one by one above)
    torch.testing.assert_close(out.mean.detach(), mc.mean(0), rtol=0.1, atol=0.05)
    assert bool(torch.isfinite(out.var).all()) and float(out.var.min()) > 0


def test_an_operation_without_a_rule_runs_plainly_where_only_float_layers_feed_it():
    from tnncompress.errors import UsageError

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).double()
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    post = _posterior((3, 8))
    prop = Propagator(net, {"4.weight"})  # the group norm sees a deterministic value: no rule needed
    out = prop(x, lambda name, p: post.moments() if name == "4.weight" else (p, None))
    hidden = net[:4](x)
    torch.testing.assert_close(out.mean, hidden @ post.moments()[0].T + net[4].bias, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.var, (hidden * hidden) @ post.moments()[1].T, rtol=1e-12, atol=1e-12)
    with pytest.raises(UsageError, match=r"layer '1' \(GroupNorm\).*quantised layer '0'.*bqn_exclude"):
        Propagator(net, {"0.weight", "4.weight"})
