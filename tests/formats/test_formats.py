"""Formats and Layer-Decomp: exactness at full rank (or on exactly low-rank kernels) against nn.Conv2d /
nn.Linear for every geometry, the SVD optimum, rank rules against the budget, groups, padding modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.formats import KernelShape, TensorizedLayer, balanced_factors, get_format, list_formats, tensorize

T, S, K = 12, 8, 3
EXACT_BY_CAPS = {"svd", "tk", "mtk", "tt", "mtt"}  # full ranks represent any kernel
LOW_RANK = {"cp": {"r": 3}, "mcp": {"r": 3}, "tr": {"r0": 2, "r1": 2, "r2": 2, "r3": 2},
            "mtr": {"r0": 2, "r1": 2, "r2": 2, "r3": 2}}


def _full_ranks(fmt, shape, tz):
    return fmt.normalise_ranks(shape, tz, {n: 10_000 for n in fmt.rank_names(tz)})


def _exact_kernel(name: str, shape: KernelShape, seed: int) -> tuple[torch.Tensor, dict]:
    """A kernel the format represents exactly, and the ranks that do it."""
    fmt = get_format(name)
    tz = tensorize(shape.t, shape.in_channels) if fmt.reshaped else None
    g = torch.Generator().manual_seed(seed)
    if name in EXACT_BY_CAPS:
        kernel = torch.randn(shape.out_channels, shape.in_channels, shape.kh, shape.kw, generator=g,
                             dtype=torch.float64)
        return kernel, _full_ranks(fmt, shape, tz)
    ranks = LOW_RANK[name]
    factors = [torch.randn(s, generator=g, dtype=torch.float64) for s in fmt.factor_shapes(shape, tz, ranks)]
    return fmt.rebuild(factors, shape, tz), ranks


@pytest.mark.parametrize("name", list_formats())
@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, "same", 2), (2, 1, 2), (1, 1, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_layer_reproduces_dense_conv(name, stride, padding, dilation, bias):
    kernel, ranks = _exact_kernel(name, KernelShape(T, S, K, K), seed=0)
    conv = nn.Conv2d(S, T, K, stride=stride, padding=padding, dilation=dilation, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(kernel.float())
    layer = TensorizedLayer.from_layer(conv, name, ranks)
    x = torch.randn(3, S, 13, 11)
    want = conv(x)
    got = layer(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize("name", list_formats())
def test_linear_layer(name):
    kernel, ranks = _exact_kernel(name, KernelShape(T, S, 1, 1), seed=1)
    linear = nn.Linear(S, T).double()
    with torch.no_grad():
        linear.weight.copy_(kernel[:, :, 0, 0])
    layer = TensorizedLayer.from_layer(linear, name, ranks)
    x = torch.randn(4, 2, S, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # extra leading dims
    got, want = layer(x), linear(x)
    assert got.shape == want.shape
    # ALS stops at a relative change of 1e-10 (TR) to 1e-5 (CP): "exact" means the kernel to ~1e-9
    assert float((got - want).norm() / want.norm()) < 1e-8


@pytest.mark.parametrize("name", ["svd", "cp", "tk", "mtt", "mtr"])
def test_grouped_convolution(name):
    groups = 2
    shape = KernelShape(2 * T, S, K, K, groups)
    per_group = [_exact_kernel(name, KernelShape(T, S, K, K), seed=g) for g in range(groups)]
    conv = nn.Conv2d(groups * S, 2 * T, K, padding=1, groups=groups, bias=True).double()
    with torch.no_grad():
        conv.weight.copy_(torch.cat([k for k, _ in per_group]))
    layer = TensorizedLayer.from_layer(conv, name, per_group[0][1])
    assert layer.shape == shape
    x = torch.randn(2, groups * S, 9, 9, dtype=torch.float64)
    assert torch.allclose(layer(x), conv(x), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_are_carried(mode):
    conv = nn.Conv2d(S, T, K, padding=1, padding_mode=mode).double()
    layer = TensorizedLayer.from_layer(conv, "tk", {"r1": S, "r2": T})
    x = torch.randn(2, S, 7, 7, dtype=torch.float64)
    assert torch.allclose(layer(x), conv(x), rtol=1e-10, atol=1e-10)


def test_svd_layer_decomp_is_the_truncated_svd_optimum():
    g = torch.Generator().manual_seed(0)
    kernel = torch.randn(T, S, K, K, generator=g, dtype=torch.float64)
    fmt, shape = get_format("svd"), KernelShape(T, S, K, K)
    sigma = torch.linalg.svdvals(kernel.reshape(T, -1))
    for r in (1, 3, 7):
        approx = fmt.rebuild(fmt.initialise(kernel, shape, None, {"r": r}), shape, None)
        error = torch.linalg.vector_norm(approx - kernel)
        assert error == pytest.approx(float(sigma[r:].square().sum().sqrt()), rel=1e-10)


@pytest.mark.parametrize("name", sorted(LOW_RANK))
def test_als_recovers_exactly_low_rank_kernels(name):
    fmt, shape = get_format(name), KernelShape(T, S, K, K)
    tz = tensorize(T, S) if fmt.reshaped else None
    for seed in range(3):
        kernel, ranks = _exact_kernel(name, shape, seed)
        approx = fmt.rebuild(fmt.initialise(kernel, shape, tz, ranks, seed=seed), shape, tz)
        assert float(torch.linalg.vector_norm(approx - kernel) / torch.linalg.vector_norm(kernel)) < 1e-6


@pytest.mark.parametrize("name", list_formats())
@pytest.mark.parametrize("rate", [0.02, 0.05, 0.2])
def test_rank_rule_fits_the_budget(name, rate):
    fmt = get_format(name)
    shape = KernelShape(64, 64, 3, 3)
    tz = tensorize(64, 64) if fmt.reshaped else None
    budget = int(rate * shape.numel)
    ranks = fmt.ranks_for_budget(shape, tz, budget)
    assert ranks is not None
    assert fmt.params(shape, tz, ranks) <= budget
    # and the rule's next step up would not fit: the ranks are the largest the rule allows
    if name in ("svd", "cp", "mcp"):
        assert fmt.params(shape, tz, {"r": ranks["r"] + 1}) > budget


def test_budget_too_small():
    shape = KernelShape(64, 64, 3, 3)
    assert get_format("tt").ranks_for_budget(shape, None, 10) is None


def test_rank_validation():
    fmt, shape = get_format("tk"), KernelShape(T, S, K, K)
    with pytest.raises(ValueError, match=r"needs ranks \['r1', 'r2'\]"):
        fmt.normalise_ranks(shape, None, {"r": 3})
    with pytest.raises(ValueError, match="positive integer"):
        fmt.normalise_ranks(shape, None, {"r1": 0, "r2": 2})
    assert fmt.normalise_ranks(shape, None, {"r1": 100, "r2": 5}) == {"r1": S, "r2": 5}  # capped at S


def test_tensorization():
    assert balanced_factors(256, 3) == (8, 8, 4)
    assert balanced_factors(512, 3) == (8, 8, 8)
    assert balanced_factors(64, 2) == (8, 8)
    tz = tensorize(64, 3)  # 3 is prime: one mode only, for both
    assert (tz.out_modes, tz.in_modes) == ((64,), (3,))
    assert tensorize(32, 16).m == 3


def test_expressions_and_flops():
    fmt, shape = get_format("cp"), KernelShape(64, 64, 3, 3)
    assert fmt.expression(shape, None) == "bshw,rs,rh,rw,rt->bthw|hw"
    ranks = {"r": 10}
    flops = fmt.flops(shape, None, ranks, (16, 16), padding=1)
    # factorised order: 2 1x1 convs (64x10 each) and two depthwise 3-tap convs, per output pixel
    assert flops == 2 * 256 * (64 * 10 + 10 * 3 + 10 * 3 + 10 * 64)
    dense = 2 * 256 * 64 * 64 * 9  # the layer it replaces, per sample
    assert flops < dense / 10
