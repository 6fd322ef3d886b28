"""Data-aware Layer-Decomp: exact targets are reached by every format, the error never rises, the fit
uses the moments exactly, and the norm's affine (or the bias) is refitted in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.calibrate import collect_moments
from tnncompress.compress import refit
from tnncompress.formats import KernelShape, TensorizedLayer, get_format, list_formats, tensorize


def _layers(fmt: str, groups: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(8, 12, 3, padding=1, stride=2 if fmt in ("tk", "mtt") else 1, groups=groups).double()
    f = get_format(fmt)
    shape = KernelShape(12, 8 // groups, 3, 3, groups)
    tz = tensorize(shape.t, shape.in_channels) if f.reshaped else None
    ranks = f.ranks_for_budget(shape, tz, 300 // groups)
    truth = TensorizedLayer.from_layer(conv, fmt, ranks).double()
    with torch.no_grad():
        for p in truth.factors:
            p.copy_(torch.randn_like(p))
    student = TensorizedLayer.from_layer(conv, fmt, ranks).double()
    with torch.no_grad():
        for p, q in zip(student.factors, truth.factors, strict=True):
            p.copy_(q + 0.1 * torch.randn_like(q) * q.std())
        student.bias.copy_(truth.bias + 0.2)
    return truth, student


def _moments(layer, x, t):
    return collect_moments(layer, [(x[i:i + 16], t[i:i + 16]) for i in range(0, len(x), 16)])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list_formats())
def test_an_exactly_reachable_output_is_reached_by_every_format(fmt):
    truth, student = _layers(fmt)
    x = torch.randn(48, 8, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        t = truth(x)
    result = refit(fmt, student, None, _moments(student, x, t), sweeps=40, iterations=200)
    assert result.error_before > 0.05
    assert result.error_after < 2e-3, (fmt, result.error_after)  # ALS from a perturbed start: CP creeps slowest
    with torch.no_grad():  # the moments' error is the activations' error
        direct = float((student(x) - t).norm() / t.norm())
    assert direct == pytest.approx(result.error_after, rel=0.05, abs=1e-6)


@pytest.mark.parametrize("fmt", ["cp", "mtt", "tk"])
def test_a_refit_never_raises_the_calibration_error(fmt):
    truth, student = _layers(fmt, seed=3)
    x = torch.randn(32, 8, 9, 9, dtype=torch.float64)
    with torch.no_grad():  # a target the format cannot reach: a dense random layer
        t = nn.Conv2d(8, 12, 3, padding=1, stride=student.stride).double()(x)
    result = refit(fmt, student, None, _moments(student, x, t), sweeps=5)
    errors = [result.error_before, *result.history]
    assert all(b <= a for a, b in zip(errors, errors[1:], strict=False)) and result.error_after <= result.error_before


@pytest.mark.slow
def test_grouped_layers_and_the_norm_affine_are_refitted():
    truth, student = _layers("cp", groups=2, seed=5)
    norm = nn.BatchNorm2d(12).double().eval()
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    target_norm = nn.BatchNorm2d(12).double().eval()
    target_norm.load_state_dict(norm.state_dict())
    with torch.no_grad():
        target_norm.weight.uniform_(0.5, 2)
        target_norm.bias.uniform_(-1, 1)
    x = torch.randn(48, 8, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        t = target_norm(truth(x))
    result = refit("cp", student, norm, _moments(student, x, t), sweeps=40, iterations=200)
    with torch.no_grad():
        direct = float((norm(student(x)) - t).norm() / t.norm())
    assert result.error_after < 5e-3 and direct == pytest.approx(result.error_after, rel=0.05, abs=1e-6)
    assert not torch.allclose(norm.weight, torch.ones(12, dtype=torch.float64))  # the affine moved


def test_the_bias_alone_is_refitted_without_a_norm():
    """With the factors exact and the bias off by a constant, one affine step removes the error."""
    truth, student = _layers("tk", seed=7)
    with torch.no_grad():
        for p, q in zip(student.factors, truth.factors, strict=True):
            p.copy_(q)
    x = torch.randn(16, 8, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        t = truth(x)
    result = refit("tk", student, None, _moments(student, x, t), sweeps=1)
    assert result.error_after < 1e-6 and torch.allclose(student.bias, truth.bias, atol=1e-6)
