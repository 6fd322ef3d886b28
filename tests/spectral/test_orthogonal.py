"""SC-Fac orthogonal convolutions: exact orthogonality by construction, checked on the operator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.spectral import conv_singular_values, layer_spectrum
from tnncompress.spectral.orthogonal import OrthogonalConv2d

# (in, out, kernel, stride, dilation, groups, circular padding giving an n / s output); out >= in * s^2
COLUMN_ORTHOGONAL = [
    (8, 8, 3, 1, 1, 1, 1),
    (4, 16, 2, 2, 1, 1, 0),  # stride 2: 4 x 2 x 2 = 16 phases in
    (4, 16, 4, 2, 1, 1, 1),  # stride 2, two taps per phase
    (8, 8, 3, 1, 2, 1, 2),  # dilation 2
    (8, 8, 3, 1, 1, 2, 1),  # groups 2
    (6, 12, 3, 1, 1, 3, 1),  # groups 3, wider out
    (4, 8, (3, 1), 1, 1, 1, (1, 0)),  # rectangular
]


def _random(layer: OrthogonalConv2d, seed: int = 0) -> OrthogonalConv2d:
    """Away from the delta it starts as: any parameters give an orthogonal kernel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.skew_h, layer.skew_w):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return layer


def _layer(case, dtype):
    ci, co, k, s, d, g, pad = case
    return _random(OrthogonalConv2d(ci, co, k, s, pad, d, g, padding_mode="circular", dtype=dtype))


@pytest.mark.parametrize("case", COLUMN_ORTHOGONAL)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_norm_is_preserved(case, dtype, tol):
    layer = _layer(case, dtype).eval()
    x = torch.randn(6, case[0], 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y = layer(x)
    s = case[3]
    assert y.shape[-2:] == (16 // s, 16 // s) or case[2] == (3, 1)
    ratio = y.flatten(1).norm(dim=1).double() / x.flatten(1).norm(dim=1).double()
    assert (ratio - 1).abs().max() <= tol


@pytest.mark.parametrize("case", COLUMN_ORTHOGONAL)
def test_every_singular_value_is_one(case):
    layer = _layer(case, torch.float64)
    values = conv_singular_values(layer.weight.detach(), (8, 8), case[3], case[4], case[5])
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-12)


def test_fewer_outputs_than_inputs_preserve_gradient_norms():
    layer = _random(OrthogonalConv2d(8, 4, 3, 1, 1, padding_mode="circular", dtype=torch.float64))
    x = torch.randn(3, 8, 12, 12, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, 12, 12, dtype=torch.float64)
    (grad,) = torch.autograd.grad(layer(x), x, g)
    ratio = grad.flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)
    assert (ratio - 1).abs().max() <= 1e-12
    values = conv_singular_values(layer.weight.detach(), (12, 12))
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-12)


def test_zero_padding_makes_it_one_lipschitz():
    layer = _random(OrthogonalConv2d(8, 8, 3, 1, 1, padding_mode="zeros", dtype=torch.float64))
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
    spectrum = layer_spectrum("x", conv, (10, 10), power_iters=100)
    assert spectrum.sigma_max <= 1 + 1e-12 and spectrum.lower <= 1 + 1e-12


def test_it_starts_as_a_centred_delta_and_gradients_are_finite():
    layer = OrthogonalConv2d(8, 8, 3, 1, 1, dtype=torch.float64)
    w = layer.weight.detach()
    assert w[:, :, 1, 1].abs().sum() > 0
    w_off = w.clone()
    w_off[:, :, 1, 1] = 0
    assert w_off.abs().max() < 1e-12
    _random(layer)
    layer.train()
    loss = layer(torch.randn(2, 8, 6, 6, dtype=torch.float64)).pow(2).sum()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in (layer.skew_h, layer.skew_w))


def test_the_kernel_is_cached_without_autograd_and_recomputed_after_a_change():
    layer = OrthogonalConv2d(4, 4, 3, 1, 1).eval()
    with torch.no_grad():
        first = layer.weight
        assert layer.weight is first  # one F.conv2d per forward, no rebuild
        layer.skew_h.add_(torch.randn(layer.skew_h.shape))  # a constant would leave A - A^T as it is
        assert layer.weight is not first and not torch.equal(layer.weight, first)


def test_the_kernel_is_rebuilt_with_a_graph_when_a_gradient_is_wanted_even_in_eval():
    layer = OrthogonalConv2d(4, 4, 3, 1, 1).eval()  # distillation trains students in eval mode
    with torch.no_grad():
        cached = layer.weight
    rebuilt = layer.weight
    assert rebuilt is not cached and rebuilt.grad_fn is not None
    torch.testing.assert_close(rebuilt.detach(), cached, rtol=0, atol=0)


def test_from_conv_moves_towards_the_pretrained_kernels_polar_factor():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=True).double()
    start, _ = OrthogonalConv2d.from_conv(conv, (8, 8), steps=0)
    layer, error = OrthogonalConv2d.from_conv(conv, (8, 8), steps=100)
    assert error < _distance(start, conv) and torch.equal(layer.bias.detach(), conv.bias.detach())
    values = conv_singular_values(layer.weight.detach(), (8, 8))
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-12)


def _distance(layer: OrthogonalConv2d, conv: nn.Conv2d) -> float:
    from tnncompress.spectral.clip import _clip

    polar = _clip(conv.weight.detach(), (10, 10), 0.0, (1, 1), (1, 1), assign=1.0)[0]
    return float((layer.weight_() - polar).norm() / polar.norm())


@pytest.mark.parametrize("args, message", [
    ((8, 8, 3, 2), "not a multiple of the stride 2"),
    ((8, 8, 2, 2, 0, 2), "stride 2 and dilation 2"),
    ((8, 6, 3, 1, 1, 1, 4), "do not split into 4 groups"),
])
def test_bad_geometry_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        OrthogonalConv2d(*args)


def test_gradients_flow_in_eval_mode_as_distillation_trains():
    layer = _random(OrthogonalConv2d(4, 4, 3, 1, 1, dtype=torch.float64)).eval()
    layer(torch.randn(1, 4, 5, 5, dtype=torch.float64)).sum().backward()
    assert layer.skew_h.grad is not None and layer.skew_h.grad.abs().sum() > 0


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_densified_layer_computes_the_same(padding_mode):
    from tnncompress.spectral.replace import dense_conv

    layer = _random(OrthogonalConv2d(4, 8, 4, 2, 1, bias=True, padding_mode=padding_mode, dtype=torch.float64))
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    conv = dense_conv(layer)
    assert type(conv) is nn.Conv2d
    torch.testing.assert_close(conv(x), layer(x), rtol=1e-12, atol=1e-12)
