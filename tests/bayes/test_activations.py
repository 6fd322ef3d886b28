"""Quantised activations: their moments against Monte Carlo, the graph rewrite that places them, its
record in structure.json, the step fit, and a network with quantised weights and activations whose
analytic moments agree with sampled QNNs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.bayes.activations import (
    QuantizedActivation,
    best_step,
    fit_steps,
    from_record,
    quantize_activations,
    quantizers,
    record,
)
from tnncompress.bayes.network import BayesianQuantizedNetwork
from tnncompress.bayes.propagate import Propagator, fixed_weights
from tnncompress.ops import moments as rules

from .montecarlo import SAMPLES, draw, gaussian_input, within


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_quantised_activation_moments_match_monte_carlo(bits):
    q = QuantizedActivation(bits).double()
    if bits > 1:
        with torch.no_grad():
            q.log_step.fill_(-0.7)  # step 0.5: the inputs' spread covers several thresholds
    mean, var = gaussian_input((2, 3, 4, 4), seed=bits)
    # some entries far above the first threshold, some below; not so far from a threshold that a level
    # is crossed with a probability of 1e-4, which 20,000 samples cannot estimate (the MC SE collapses)
    mean, var = 0.6 * mean + 0.4, var + 0.5
    got = q.moments((mean, var))
    g = torch.Generator().manual_seed(20 + bits)
    with torch.no_grad():
        mc = q(draw(mean, var, SAMPLES, g))
    within(mc, *got)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_a_deterministic_input_goes_through_the_forward_quantiser(bits):
    q = QuantizedActivation(bits)
    x = torch.linspace(-3, 20, 231)
    mean, var = q.moments((x, None))
    assert var is None and torch.equal(mean, q(x))
    levels = torch.unique(q(x))
    assert levels.tolist() == ([-1.0, 1.0] if bits == 1 else (torch.arange(2 ** bits) * q.step).tolist())


def test_the_staircase_rule_is_a_sum_of_probabilities_of_thresholds_crossed():
    """Against the categorical distribution of the level, computed directly from the normal CDF."""
    m, v = torch.tensor([0.3, 1.7, -0.4], dtype=torch.float64), torch.tensor([0.2, 0.5, 0.1], dtype=torch.float64)
    step, top = torch.tensor(0.6, dtype=torch.float64), 3
    normal = torch.distributions.Normal(m, v.sqrt())
    edges = [-float("inf")] + [(k - 0.5) * 0.6 for k in range(1, top + 1)] + [float("inf")]
    cdf = [normal.cdf(torch.tensor(e, dtype=torch.float64)) for e in edges]
    p = torch.stack([hi - lo for lo, hi in zip(cdf[:-1], cdf[1:], strict=True)], -1)
    values = torch.arange(top + 1, dtype=torch.float64) * 0.6
    mean, var = rules.staircase((m, v), step, top)
    torch.testing.assert_close(mean, p @ values, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var, p @ values ** 2 - (p @ values) ** 2, rtol=1e-9, atol=1e-12)


class _Every(nn.Module):
    """A ReLU as a module, as a function, as a method and in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = F.relu(x + 1.0).relu()
        x = torch.relu(F.relu(x - 1.0, inplace=True))
        return self.fc(x.flatten(1))


def test_every_kind_of_relu_is_replaced_and_the_record_replays_it():
    torch.manual_seed(0)
    net = _Every().eval()
    gm = quantize_activations(net, 2)
    assert sorted(quantizers(gm)) == ["act", "relu", "relu_1", "relu_2", "relu_3"]
    assert not any(isinstance(m, nn.ReLU) for m in gm.modules())
    rec = record(gm)
    assert rec == {"bits": 2, "nodes": ["act", "relu", "relu_1", "relu_2", "relu_3"]}
    again = from_record(_Every().eval(), rec)
    again.load_state_dict(gm.state_dict())
    x = torch.randn(5, 1, 4, 4)
    torch.testing.assert_close(again(x), gm(x), rtol=0, atol=0)
    # only the named nodes, when nodes are given
    assert sorted(quantizers(quantize_activations(net, 1, ["relu_1"]))) == ["relu_1"]
    assert record(net) is None


@pytest.mark.parametrize("rec,words", [({"bits": 9, "nodes": ["relu"]}, "activation bits"),
                                       ({"bits": 2, "nodes": ["nope"]}, "no ReLU node named nope"),
                                       ({"bits": "2", "nodes": ["relu"]}, "integer 'bits'"),
                                       ({"bits": 2, "nodes": []}, "non-empty list"),
                                       (["relu"], "an object")])
def test_a_bad_activation_record_is_refused(rec, words):
    with pytest.raises(ValueError, match=words):
        from_record(_Every().eval(), rec)


def test_a_model_without_relu_is_refused():
    with pytest.raises(ValueError, match="no ReLU"):
        quantize_activations(nn.Sequential(nn.Conv2d(1, 2, 3), nn.SiLU()), 2)


def test_the_fitted_step_is_the_best_of_its_neighbours_and_fit_steps_uses_the_float_relu():
    h = torch.randn(50_000, dtype=torch.float64) * 2.0

    def err(step, top=3):
        return float((h.clamp_min(0) - torch.clamp(torch.round(h / step), 0, top) * step).pow(2).sum())

    best = best_step(h, 3)
    # against a scan 15 times finer: within 1% of its least error
    scan = min(err(s) for s in torch.linspace(0.01, float(h.max()) / 3, 1000).tolist())
    assert scan <= err(best) <= 1.01 * scan

    torch.manual_seed(1)
    net = _Every().eval()
    gm = quantize_activations(net, 3)
    x = torch.randn(8, 1, 4, 4)
    steps = fit_steps(gm, [x])
    assert set(steps) == {"act", "relu", "relu_1", "relu_2", "relu_3"}
    # the first quantiser saw exactly relu(conv(x)) (nothing quantised before it while fitting)
    assert steps["act"] == best_step(net.conv(x).detach().flatten().double(), 7)
    assert all(m.observed is None for m in quantizers(gm).values())


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 2 * 2, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(F.max_pool2d(x, 2).flatten(1))


@pytest.mark.slow
@pytest.mark.parametrize("act_bits", [1, 2])
def test_a_network_with_quantised_weights_and_activations_matches_sampled_qnns(act_bits):
    torch.manual_seed(3)
    net = _Small().double().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2), net.bn.running_var.uniform_(0.5, 1.5)
    gm = quantize_activations(net, act_bits)
    if act_bits > 1:
        with torch.no_grad():
            quantizers(gm)["relu"].log_step.fill_(-1.0)
    bqn = BayesianQuantizedNetwork(gm, 2, dense=True, per_channel=True)
    with torch.no_grad():  # an uncertain posterior: every weight spread over its levels
        for name in bqn.names:
            bqn.posterior(name).logits.mul_(0.05)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    got = bqn.analytic(x)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        mc = torch.stack([bqn.logits_with(bqn.weights("sample", g), x) * bqn.temperature for _ in range(4000)])
    # the quantiser's output is not Gaussian, and the next layer sums only 24 of them: the mean-field /
    # CLT step is an approximation, so the test is the agreement of the scale, not 3 SE per entry
    torch.testing.assert_close(got.mean, mc.mean(0), rtol=0, atol=0.15 * float(mc.std(0).mean()))
    ratio = got.var.detach() / mc.var(0)
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6, ratio


def test_fixed_weights_through_quantised_activations_are_the_forward_pass():
    torch.manual_seed(5)
    gm = quantize_activations(_Small().double().eval(), 2)
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    out = Propagator(gm)(x, fixed_weights)
    assert out.var is None
    torch.testing.assert_close(out.mean, gm(x), rtol=0, atol=1e-12)
