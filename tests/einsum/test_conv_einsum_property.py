"""Property-based tests of conv_einsum against the loop reference, in float64 and float32, with gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tnncompress.einsum import conv_einsum

from .reference import reference

CONV_NAMES = ["h", "w", "(d1)"]
PLAIN = ["a", "c", "e", "(g2)", "k", "m"]


@st.composite
def problems(draw):
    n_conv = draw(st.integers(1, 3))
    conv = CONV_NAMES[:n_conv]
    n_weights = draw(st.integers(1, 3))
    pool = PLAIN[: draw(st.integers(2, len(PLAIN)))]
    x_plain = draw(st.lists(st.sampled_from(pool), unique=True, max_size=2))
    terms = [["b"] + x_plain + conv]
    for _ in range(n_weights):
        plain = draw(st.lists(st.sampled_from(pool), unique=True, min_size=1, max_size=3))
        wconv = [c for c in conv if draw(st.booleans())]
        modes = plain + wconv
        terms.append(draw(st.permutations(modes)))
    present = list(dict.fromkeys(m for t in terms for m in t if m not in conv and m != "b"))
    kept = draw(st.lists(st.sampled_from(present), unique=True)) if present else []
    output = draw(st.permutations(["b"] + kept + conv))
    sizes = {m: draw(st.integers(1, 3)) for m in present + ["b"]}
    shapes = []
    for i, t in enumerate(terms):
        shape = []
        for m in t:
            if m in conv:
                shape.append(draw(st.integers(4, 8)) if i == 0 else draw(st.integers(1, 3)))
            else:
                shape.append(sizes[m])
        shapes.append(shape)
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(*[st.integers(1, 2)] * n_conv)))
    dilation = draw(st.one_of(st.integers(1, 2), st.tuples(*[st.integers(1, 2)] * n_conv)))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(*[st.integers(0, 2)] * n_conv),
                             st.sampled_from(["same", "valid"])))
    if padding == "same":
        stride = 1
    term = lambda modes: "".join(modes)  # noqa: E731
    text = ",".join(term(t) for t in terms) + "->" + term(output) + "|" + ",".join(conv)
    optimize = draw(st.sampled_from(["optimal", "naive", "rebuild"]))
    return text, shapes, dict(stride=stride, padding=padding, dilation=dilation), optimize, conv, terms


def _fits(shapes, kwargs, conv, terms):
    """The padded input must be at least as long as the dilated effective filter along each mode."""
    for k, c in enumerate(conv):
        x_len = shapes[0][terms[0].index(c)]
        lengths = [s[t.index(c)] for s, t in zip(shapes[1:], terms[1:], strict=True) if c in t]
        eff = sum(lengths) - len(lengths) + 1 if lengths else 1
        d = kwargs["dilation"] if isinstance(kwargs["dilation"], int) else kwargs["dilation"][k]
        p = kwargs["padding"]
        pad = 0 if p in ("same", "valid") else (p if isinstance(p, int) else p[k]) * 2
        if p == "same":
            pad = d * (eff - 1)
        if x_len + pad < d * (eff - 1) + 1:
            return False
    return True


def _tensors(shapes, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 2**16))
def test_matches_reference_float64(problem, seed):
    text, shapes, kwargs, optimize, conv, terms = problem
    assume(_fits(shapes, kwargs, conv, terms))
    ops = _tensors(shapes, torch.float64, seed)
    got = conv_einsum(text, *ops, optimize=optimize, **kwargs)
    want = reference(text, *ops, **kwargs)
    assert got.shape == want.shape
    scale = want.abs().max().clamp_min(1e-300)
    assert (got - want).abs().max() <= 1e-10 * scale


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 2**16))
def test_matches_reference_float32(problem, seed):
    text, shapes, kwargs, optimize, conv, terms = problem
    assume(_fits(shapes, kwargs, conv, terms))
    ops = _tensors(shapes, torch.float64, seed)
    want = reference(text, *ops, **kwargs)
    got = conv_einsum(text, *(o.float() for o in ops), optimize=optimize, **kwargs)
    scale = want.abs().max().clamp_min(1e-30)
    assert (got.double() - want).abs().max() <= 1e-5 * scale


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 2**16))
def test_gradients(problem, seed):
    text, shapes, kwargs, optimize, conv, terms = problem
    assume(_fits(shapes, kwargs, conv, terms))
    ops = [t.requires_grad_() for t in _tensors(shapes, torch.float64, seed)]
    # fast mode compares u^T J v with its finite difference for random u, v: any wrong Jacobian entry shows
    # (with probability 1), at one derivative per input instead of one per input entry
    assert torch.autograd.gradcheck(lambda *o: conv_einsum(text, *o, optimize=optimize, **kwargs), ops,
                                    fast_mode=True)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_weights_only_is_full_convolution(n_weights, length, rank, seed):
    terms = ["rh" if i % 2 == 0 else "hr" for i in range(n_weights)]
    text = ",".join(terms) + "->rh|h"
    g = torch.Generator().manual_seed(seed)
    ops = [torch.randn((rank, length) if t == "rh" else (length, rank), generator=g, dtype=torch.float64)
           for t in terms]
    got = conv_einsum(text, *ops, weights_only=True)
    want = reference(text, *ops, weights_only=True)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # and independently: a full convolution of two filters is numpy-style convolution
    if n_weights == 2 and rank == 1:
        a, b = ops[0].flatten(), ops[1].flatten()
        full = torch.tensor([sum(a[i] * b[k - i] for i in range(len(a)) if 0 <= k - i < len(b))
                             for k in range(len(a) + len(b) - 1)], dtype=torch.float64)
        assert torch.allclose(got.flatten(), full)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 2),
       st.one_of(st.integers(0, 2), st.just("same"), st.just("valid")), st.integers(1, 3), st.integers(0, 999))
def test_plain_convolution_equals_torch(dims, s, t, stride, dilation, padding, k, seed):
    """conv_einsum('bs<sp>,ts<sp>->bt<sp>|<sp>') is F.conv1d/2d/3d with the same arguments."""
    modes = ["h", "w", "(d1)"][:dims]
    text = f"bs{''.join(modes)},ts{''.join(modes)}->bt{''.join(modes)}|{''.join(modes)}"
    if padding == "same":
        stride = 1
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, s, *([7] * dims), generator=g, dtype=torch.float64)
    w = torch.randn(t, s, *([k] * dims), generator=g, dtype=torch.float64)
    assume(7 + (2 * padding if isinstance(padding, int) else 0) >= dilation * (k - 1) + 1 or padding == "same")
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    want = conv(x, w, stride=stride, padding=padding, dilation=dilation)
    got = conv_einsum(text, x, w, stride=stride, padding=padding, dilation=dilation)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
