"""The moments of a layer's patches equal those of the patches themselves, formed by brute force in
float64 (im2col and a plain sum), for every geometry a convolution can have."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tnncompress.calibrate import collect_moments, moments
from tnncompress.calibrate.moments import _ShiftedProducts
from tnncompress.formats import TensorizedLayer


def _reference(conv: nn.Conv2d, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """im2col of the input as nn.Conv2d pads it, then every sum over batch and position."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        pads = ([(0, 0)] * 2 if conv.padding == "valid" else [(v // 2, v - v // 2) for v in total]
                if isinstance(conv.padding, str) else [(p, p) for p in conv.padding])
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, [v for lo_hi in reversed(pads) for v in lo_hi], mode=mode)
        padding = 0
    else:
        padding = conv.padding
    g = conv.groups
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride)
    cols = cols.reshape(x.shape[0], g, -1, cols.shape[-1])  # [B, g, K, P]
    tt = t.reshape(t.shape[0], g, -1, cols.shape[-1])
    n = cols.shape[0] * cols.shape[-1]
    return {"xx": torch.einsum("bgkp,bglp->gkl", cols, cols) / n, "x": cols.sum((0, 3)) / n,
            "xt": torch.einsum("bgkp,bgtp->gkt", cols, tt) / n, "t": tt.sum((0, 3)) / n,
            "tt": (tt * tt).sum((0, 3)) / n}


GEOMETRIES = [  # in, out, kernel, stride, padding, dilation, groups, mode, size
    (6, 8, 3, 1, 1, 1, 1, "zeros", (9, 11)),
    (6, 8, 3, 1, 0, 1, 1, "zeros", (9, 9)),
    (6, 6, (3, 5), 1, (1, 2), 1, 2, "zeros", (10, 12)),
    (4, 8, 3, 1, 2, 2, 1, "zeros", (13, 10)),  # dilated
    (6, 6, 3, 1, 1, 1, 6, "zeros", (8, 8)),  # depthwise
    (4, 6, 3, 1, 1, 1, 1, "reflect", (9, 9)),
    (4, 6, 3, 1, 1, 1, 1, "circular", (7, 9)),
    (4, 6, (2, 4), 1, "same", 1, 1, "zeros", (9, 9)),  # even kernel, "same": uneven pads
    (4, 6, 3, 1, "valid", 1, 1, "zeros", (9, 9)),
    (4, 6, 1, 1, 0, 1, 1, "zeros", (5, 5)),  # 1x1
    (4, 6, 3, 2, 1, 1, 1, "zeros", (9, 9)),  # strided: the im2col product
    (4, 6, 3, 1, 1, 1, 1, "zeros", (2, 2)),  # borders overlap: the im2col product
    (4, 6, 5, (1, 2), 2, 1, 2, "zeros", (11, 11)),
]


@pytest.mark.parametrize("path", ["shifted", "im2col"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[str(i) for i in range(len(GEOMETRIES))])
def test_conv_moments_equal_the_im2col_sums(geometry, path, monkeypatch):
    """Both ways of forming E[x x^T] (the shifted sums wherever they apply, whatever they cost)."""
    monkeypatch.setattr(moments, "FASTER", float("inf") if path == "shifted" else 0.0)
    cin, cout, k, stride, padding, dilation, groups, mode, size = geometry
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, padding_mode=mode).double()
    layer = TensorizedLayer.from_layer(conv, "cp", {"r": 3}).double()
    x = torch.randn(10, cin, *size, dtype=torch.float64) + 0.3
    with torch.no_grad():
        t = conv(x) + 0.1 * torch.randn_like(conv(x))
    got = collect_moments(layer, [(x[:4], t[:4]), (x[4:], t[4:])])
    want = _reference(conv, x, t)
    for key, value in want.items():
        assert getattr(got, key).shape == value.shape, key
        torch.testing.assert_close(getattr(got, key), value, rtol=1e-10, atol=1e-12, msg=key)
    assert got.count == t.shape[0] * t.shape[-2] * t.shape[-1]


def test_the_shifted_sums_are_used_where_they_apply_and_only_there():
    def layer(stride=1, k=3, dilation=1):
        return TensorizedLayer.from_layer(nn.Conv2d(4, 4, k, stride, dilation=dilation), "cp", {"r": 2})
    assert _ShiftedProducts.applies(layer(), (30, 30))
    assert not _ShiftedProducts.applies(layer(), (9, 9))  # the border sums would cost more than im2col
    assert not _ShiftedProducts.applies(layer(), (3, 3))
    assert not _ShiftedProducts.applies(layer(stride=2), (16, 16))
    assert not _ShiftedProducts.applies(layer(dilation=3), (11, 11))  # borders overlap


def test_float32_inputs_give_moments_close_to_float64():
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    layer = TensorizedLayer.from_layer(conv, "cp", {"r": 4})
    x = torch.randn(32, 16, 14, 14)
    with torch.no_grad():
        t = conv(x)
    got = collect_moments(layer, [(x, t)])
    want = _reference(conv.double(), x.double(), t.double())
    for key, value in want.items():
        scale = float(value.abs().max())
        assert float((getattr(got, key) - value).abs().max()) <= 1e-5 * scale, key


def test_linear_moments():
    torch.manual_seed(2)
    lin = nn.Linear(7, 5).double()
    layer = TensorizedLayer.from_layer(lin, "cp", {"r": 2}).double()
    x = torch.randn(12, 7, dtype=torch.float64)
    t = torch.randn(12, 5, dtype=torch.float64)
    got = collect_moments(layer, [(x[:5], t[:5]), (x[5:], t[5:])])
    torch.testing.assert_close(got.xx[0], x.T @ x / 12)
    torch.testing.assert_close(got.xt[0], x.T @ t / 12)
    torch.testing.assert_close(got.x[0], x.mean(0))
    torch.testing.assert_close(got.tt[0], (t * t).mean(0))
    assert got.count == 12
