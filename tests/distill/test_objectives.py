"""The logit losses of E2E-KD against float64 formulas written out by hand."""

import math

import pytest
import torch

from tnncompress.distill.objectives import logits_loss


def _logits():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(6, 5, generator=g, dtype=torch.float64),
            torch.randn(6, 5, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0]))


def test_mse_is_the_mean_squared_distance_of_the_logits():
    s, t, _ = _logits()
    assert float(logits_loss(s, t, None, "mse")) == pytest.approx(float(((s - t) ** 2).mean()), rel=1e-6)


def test_kl_at_a_temperature_matches_its_definition_times_t_squared():
    s, t, _ = _logits()
    temp = 3.0
    expected = 0.0
    for i in range(s.shape[0]):
        p = [math.exp(v / temp) for v in t[i].tolist()]
        q = [math.exp(v / temp) for v in s[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = expected / s.shape[0] * temp ** 2
    assert float(logits_loss(s, t, None, "kl", temperature=temp)) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_is_mixed_in_with_its_weight():
    s, t, y = _logits()
    ce = -sum(float(torch.log_softmax(s[i], 0)[y[i]]) for i in range(6)) / 6
    mse = float(((s - t) ** 2).mean())
    assert float(logits_loss(s, t, y, "mse", ce_weight=0.25)) == pytest.approx(0.75 * mse + 0.25 * ce, rel=1e-5)
    assert float(logits_loss(s, t, None, "mse", ce_weight=0.25)) == pytest.approx(mse, rel=1e-6)  # no labels


def test_learning_rate_warms_up_then_decays_tenfold_at_each_milestone():
    from tnncompress.distill import DistillConfig
    from tnncompress.train import PhaseState, learning_rate

    config = DistillConfig(lr=1e-2, decay_at=[0.5, 0.75], warmup_steps=10).loop().schedule
    at = {step: learning_rate(config, PhaseState(step=step), 100) for step in (0, 4, 9, 49, 50, 74, 75, 99)}
    assert at == pytest.approx({0: 1e-3, 4: 5e-3, 9: 1e-2, 49: 1e-2, 50: 1e-3, 74: 1e-3, 75: 1e-4, 99: 1e-4})
    assert learning_rate(config, PhaseState(step=60, lr_scale=0.1), 100) == pytest.approx(1e-4)  # after the guard
    plain = DistillConfig(lr=1e-3).loop().schedule  # the defaults: no warm-up, x0.1 at half and three quarters
    assert [learning_rate(plain, PhaseState(step=s), 8) for s in (0, 3, 4, 5, 6, 7)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_kd_auto_warms_up_each_phase_unless_told_otherwise():
    from tnncompress.distill import DistillConfig

    assert DistillConfig(algorithm="auto").loop().schedule.warmup_steps == 50
    assert DistillConfig(algorithm="e2e").loop().schedule.warmup_steps == 0  # the dissertation's schedule
    assert DistillConfig(algorithm="auto", warmup_steps=0).loop().schedule.warmup_steps == 0
    assert DistillConfig(algorithm="seq", warmup_steps=7).loop().schedule.warmup_steps == 7
