"""Singular values of layers against an independent reference: the SVD of the operator written out as a
dense matrix (applied to every basis vector), in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.formats import get_format
from tnncompress.formats.layer import TensorizedLayer
from tnncompress.formats.tensorize import tensorize
from tnncompress.spectral import NoExactMethod, SpectralInputError, conv_singular_values, dense_operator, layer_spectrum


def _dense_svd(module, hw):
    return torch.linalg.svdvals(dense_operator(module, hw))


def _conv(*args, **kwargs):
    torch.manual_seed(0)
    return nn.Conv2d(*args, **kwargs).double()


EXACT = {  # circular convolutions whose output is n / stride: the FFT values are exact
    "stride 1": (_conv(3, 4, 3, padding=1, padding_mode="circular"), (6, 6)),
    "stride 2": (_conv(3, 4, 3, stride=2, padding=1, padding_mode="circular"), (6, 6)),
    "stride 2x1, rectangular": (_conv(2, 5, (3, 5), stride=(2, 1), padding=(1, 2), padding_mode="circular"), (4, 7)),
    "dilation 2": (_conv(4, 4, 3, dilation=2, padding=2, padding_mode="circular"), (6, 6)),
    "groups 2": (_conv(4, 6, 3, groups=2, padding=1, padding_mode="circular"), (5, 5)),
    "depthwise": (_conv(4, 4, 3, groups=4, padding=1, padding_mode="circular"), (5, 5)),
    "kernel larger than the map": (_conv(2, 3, 5, padding=2, padding_mode="circular"), (3, 3)),
    "1x1 stride 2": (_conv(3, 5, 1, stride=2), (4, 4)),
    "linear": (nn.Linear(7, 5).double(), (1, 1)),
}


@pytest.mark.parametrize("case", list(EXACT))
def test_fft_values_equal_the_dense_svd(case):
    module, hw = EXACT[case]
    spec = layer_spectrum("layer", module, hw)
    ref = _dense_svd(module, hw)
    assert spec.exact
    assert spec.values.numel() == ref.numel()
    assert torch.allclose(spec.values, ref, rtol=0, atol=1e-10 * float(ref[0]))


def test_stride_needs_whole_phases():
    with pytest.raises(SpectralInputError, match="layer down: input height 7 is not divisible by its stride 2"):
        layer_spectrum("down", _conv(3, 4, 3, stride=2, padding=1), (7, 8))
    with pytest.raises(ValueError, match="not divisible by the stride"):
        conv_singular_values(torch.randn(2, 2, 3, 3), (5, 6), stride=2)


@pytest.mark.parametrize("module", [nn.ConvTranspose2d(3, 3, 3), nn.Conv1d(3, 3, 3),
                                    nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")])
def test_a_layer_without_an_exact_method_is_refused_by_name(module):
    with pytest.raises(NoExactMethod, match="layer blocks.0"):
        layer_spectrum("blocks.0", module, (8, 8))


ZERO_PADDED = {
    "same, stride 1": (_conv(3, 4, 3, padding=1), (6, 6)),
    "same, stride 2": (_conv(3, 4, 3, stride=2, padding=1), (6, 6)),
    "valid": (_conv(3, 4, 3), (6, 6)),
    "7x7 stride 2 pad 3": (_conv(2, 4, 7, stride=2, padding=3), (8, 8)),
    "dilation 2": (_conv(3, 3, 3, dilation=2, padding=2), (6, 6)),
    "circular, output not n/s": (_conv(2, 3, (2, 3), padding=(0, 1), padding_mode="circular"), (6, 5)),
}


@pytest.mark.parametrize("case", list(ZERO_PADDED))
def test_zero_padding_bounds_bracket_the_dense_svd(case):
    module, hw = ZERO_PADDED[case]
    spec = layer_spectrum("layer", module, hw, power_iters=200)
    ref = _dense_svd(module, hw)
    assert not spec.exact
    # each circular value bounds the corresponding zero-padded one (interlacing), sigma_max first
    n = min(spec.values.numel(), ref.numel())
    assert (spec.values[:n] >= ref[:n] - 1e-10).all()
    assert spec.lower <= float(ref[0]) + 1e-10
    assert spec.lower >= 0.9 * float(ref[0])  # 200 iterations get close: the bound is not vacuous


def test_one_by_one_without_padding_is_exact_on_its_own_grid():
    module = _conv(3, 5, 1)
    spec = layer_spectrum("layer", module, (4, 4))
    assert spec.exact and spec.method == "single" and spec.grid == (4, 4)
    assert torch.allclose(spec.values, _dense_svd(module, (4, 4)), atol=1e-12)


RANKS = {"svd": {"r": 3}, "tk": {"r1": 3, "r2": 4}, "tt": {"r1": 3, "r2": 4, "r3": 3}, "cp": {"r": 5},
         "mtk": None}


@pytest.mark.parametrize("fmt", list(RANKS))
@pytest.mark.parametrize("stride", [1, 2])
def test_core_trick_equals_the_rebuilt_kernel(fmt, stride):
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, stride=stride, padding=1, padding_mode="circular").double()
    f = get_format(fmt)
    tz = tensorize(12, 8) if f.reshaped else None
    ranks = RANKS[fmt] or {n: 2 for n in f.rank_names(tz)}
    layer = TensorizedLayer.from_layer(conv, fmt, ranks, tz)
    spec = layer_spectrum("layer", layer, (4, 4))
    dense = nn.Conv2d(8, 12, 3, stride=stride, padding=1, padding_mode="circular").double()
    with torch.no_grad():
        dense.weight.copy_(layer.dense_kernel())
    ref = layer_spectrum("layer", dense, (4, 4))
    assert spec.path == "core" and ref.path == "kernel"
    assert spec.core[0] * spec.core[1] < 12 * 8  # a smaller problem than the kernel's
    assert spec.values.numel() == ref.values.numel()
    assert torch.allclose(spec.values, ref.values, rtol=0, atol=1e-10 * ref.sigma_max)
    assert torch.allclose(spec.values, _dense_svd(layer, (4, 4)), rtol=0, atol=1e-10 * ref.sigma_max)


def test_core_trick_with_groups_and_a_folded_scale():
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="circular").double()
    layer = TensorizedLayer.from_layer(conv, "tk", {"r1": 2, "r2": 3})
    scale = torch.rand(8, dtype=torch.float64) + 0.5
    spec = layer_spectrum("layer", layer, (4, 4), out_scale=scale)
    dense = nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="circular").double()
    with torch.no_grad():
        dense.weight.copy_(layer.dense_kernel() * scale[:, None, None, None])
    assert spec.path == "core"
    assert torch.allclose(spec.values, _dense_svd(dense, (4, 4)), atol=1e-10)


@pytest.mark.parametrize("fmt", ["mcp", "tr"])
def test_formats_without_frames_use_the_kernel(fmt):
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular").double()
    f = get_format(fmt)
    tz = tensorize(8, 8) if f.reshaped else None
    layer = TensorizedLayer.from_layer(conv, fmt, {n: 2 for n in f.rank_names(tz)}, tz)
    spec = layer_spectrum("layer", layer, (4, 4))
    assert spec.path == "kernel"
    assert torch.allclose(spec.values, _dense_svd(layer, (4, 4)), atol=1e-10)


# Circular paddings other than the one that gives n / stride outputs (issue 25, item 13): more padding
# repeats outputs, less leaves some out. Geometries none of the other tests use.
CIRCULAR = {
    "issue: 3x3, padding 2 on 5x5": (_conv(3, 3, 3, padding=2, padding_mode="circular"), (5, 5)),
    "padding 4 on 5x5": (_conv(3, 3, 3, padding=4, padding_mode="circular"), (5, 5)),
    "stride 2, padding 3 on 6x6": (_conv(3, 3, 3, stride=2, padding=3, padding_mode="circular"), (6, 6)),
    "padding 0 (outputs left out)": (_conv(2, 3, 3, padding=0, padding_mode="circular"), (6, 6)),
    "dilation 2, padding (2, 1) on 7x6": (_conv(3, 2, 3, dilation=2, padding=(2, 1), padding_mode="circular"), (7, 6)),
    "every output twice: 2x2, padding 2 on 3x3": (_conv(2, 3, 2, padding=2, padding_mode="circular"), (3, 3)),
    "stride 2, padding 3 on 4x4": (_conv(2, 3, 2, stride=2, padding=3, padding_mode="circular"), (4, 4)),
    "same, even kernel 2x4 on 5x7": (_conv(2, 2, (2, 4), padding="same", padding_mode="circular"), (5, 7)),
    "same, even kernel 4 on 6x6": (_conv(2, 4, 4, padding="same", padding_mode="circular"), (6, 6)),
}


@pytest.mark.parametrize("case", list(CIRCULAR))
def test_circular_paddings_of_any_size_are_exact_or_bracket_the_dense_svd(case):
    module, hw = CIRCULAR[case]
    want = _dense_svd(module, hw)
    spec = layer_spectrum("c", module, hw)
    if spec.exact:
        k = min(len(want), len(spec.values))
        torch.testing.assert_close(spec.values[:k], want[:k], rtol=1e-10, atol=1e-10)
        assert all(float(v.abs().sum()) < 1e-9 for v in (spec.values[k:], want[k:]))  # the rest are zeros
    else:  # a certified upper bound of sigma_max, and a power-iteration lower bound
        assert spec.sigma_max >= float(want[0]) * (1 - 1e-12) and spec.lower <= float(want[0]) * (1 + 1e-9)
        assert spec.lower > 0.99 * float(want[0])
    expected_exact = case.startswith(("every output", "same"))
    assert spec.exact == expected_exact


def test_the_network_bound_of_over_padded_circular_layers_stays_above_the_measured_one():
    from tnncompress.spectral import model_spectrum

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=2, padding_mode="circular"), nn.ReLU(),
                        nn.Conv2d(3, 3, 3, padding=2, padding_mode="circular")).double().eval()
    spectrum = model_spectrum(net, (3, 5, 5), pairs=64)
    assert spectrum.network.upper >= spectrum.network.lower
    assert all(not s.exact for s in spectrum.layers)
