"""Moment rules of single operations for sampling-free propagation (dissertation 5.2.4; the reference
notes in ../shared/reference/spectral_bqn.md section 4.2).

A value is a pair (mean, variance); a variance of None means deterministic. Every rule assumes the
entries of its inputs independent (mean field) and, for the nonlinear ones, Gaussian (the central limit
theorem over a layer's large fan-in).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

Moments = tuple[torch.Tensor, torch.Tensor | None]
VAR_FLOOR = 1e-12  # keeps sqrt and the division in erf finite where a variance is zero
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-z / _SQRT2)


def _pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI


def linear_map(fn, x: Moments, squared_fn=None) -> Moments:
    """A fixed linear map with coefficients c: mean fn(m), variance sum c^2 v = squared_fn(v) (fn itself
    for maps that only select or copy entries: slicing, padding with zeros, reshapes)."""
    m, v = x
    return fn(m), (None if v is None else (squared_fn or fn)(v))


def weighted(op, x: Moments, weight: Moments, bias: torch.Tensor | None = None) -> Moments:
    """y = op(x, W) + b for an op linear in each argument (a convolution, a matrix product) with x and W
    independent: Var[y] = op(Var x, E[W]^2) + op(E[x^2], Var W)."""
    (mx, vx), (mw, vw) = x, weight
    mean = op(mx, mw)
    if bias is not None:
        mean = mean + bias
    var = None if vx is None else op(vx, mw * mw)
    if vw is not None:
        term = op(mx * mx + vx if vx is not None else mx * mx, vw)
        var = term if var is None else var + term
    return mean, var


def relu(x: Moments) -> Moments:
    """max(0, h) for h ~ N(m, v): E = m Phi(m/s) + s phi(m/s), E[.^2] = (m^2 + v) Phi(m/s) + m s phi(m/s)."""
    m, v = x
    if v is None:
        return F.relu(m), None
    s = torch.sqrt(v.clamp_min(VAR_FLOOR))
    z = m / s
    cdf, pdf = _cdf(z), _pdf(z)
    mean = m * cdf + s * pdf
    second = (m * m + v) * cdf + m * s * pdf
    return mean, (second - mean * mean).clamp_min(0.0)


# Gauss-Hermite nodes: exact for polynomials of degree < 64, so to rounding for smooth activations; near the
# kink of a clamp-like one (ReLU6, hard-swish, leaky ReLU) the mean is within 0.01 sigma and the variance
# within 0.02 of the input's (measured against dense integration, tests/bayes/test_moments.py)
QUADRATURE_NODES = 32


def _hermite(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t, w = np.polynomial.hermite.hermgauss(QUADRATURE_NODES)
    return (torch.as_tensor(t, dtype=like.dtype, device=like.device),
            torch.as_tensor(w / math.sqrt(math.pi), dtype=like.dtype, device=like.device))


def elementwise(f: Callable[[torch.Tensor], torch.Tensor], x: Moments) -> Moments:
    """f(h), f any elementwise function (SiLU, GELU, sigmoid, tanh, hard-swish, ...), for h ~ N(m, v):
    E[f(h)] and Var[f(h)] by Gauss-Hermite quadrature, E[g(h)] = sum_i w_i g(m + sqrt(2 v) t_i) / sqrt(pi).
    The variance is summed around the mean (not E[f^2] - E[f]^2), so a small one does not cancel away."""
    m, v = x
    if v is None:
        return f(m.clone()), None  # clone: an in-place activation must not change its input's value
    nodes, weights = _hermite(m)
    s = torch.sqrt(2.0 * v)
    values = [f(m + s * t) for t in nodes]
    mean = sum(w * y for w, y in zip(weights, values, strict=True))
    var = sum(w * (y - mean) ** 2 for w, y in zip(weights, values, strict=True))
    return mean, var


def product(a: Moments, b: Moments) -> Moments:
    """a x b for independent values (a squeeze-excite gate times its input, under mean field):
    E = ma mb, Var = va vb + va mb^2 + vb ma^2."""
    (m1, v1), (m2, v2) = a, b
    mean = m1 * m2
    if v1 is None and v2 is None:
        return mean, None
    var = 0.0
    if v1 is not None:
        var = var + v1 * m2 * m2
    if v2 is not None:
        var = var + v2 * m1 * m1
    if v1 is not None and v2 is not None:
        var = var + v1 * v2
    return mean, var


def reduce_mean(x: Moments, dim=None, keepdim: bool = False) -> Moments:
    """The mean over `dim` (all entries: None) of independent entries: variance mean(v) / n, n the
    entries averaged."""
    m, v = x

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return t.mean() if dim is None else t.mean(dim, keepdim=keepdim)

    mean = reduce(m)
    if v is None:
        return mean, None
    return mean, reduce(v) * (mean.numel() / m.numel())


def clark_max(a: Moments, b: Moments) -> Moments:
    """max(h1, h2) for independent Gaussians, by Clark's (1961) moment matching."""
    (m1, v1), (m2, v2) = a, b
    if v1 is None and v2 is None:
        return torch.maximum(m1, m2), None
    v1 = v1 if v1 is not None else torch.zeros_like(m1)
    v2 = v2 if v2 is not None else torch.zeros_like(m2)
    alpha = torch.sqrt((v1 + v2).clamp_min(VAR_FLOOR))
    beta = (m1 - m2) / alpha
    cdf, cdf_neg, pdf = _cdf(beta), _cdf(-beta), _pdf(beta)
    mean = m1 * cdf + m2 * cdf_neg + alpha * pdf
    second = (m1 * m1 + v1) * cdf + (m2 * m2 + v2) * cdf_neg + (m1 + m2) * alpha * pdf
    return mean, (second - mean * mean).clamp_min(0.0)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _pool_windows(t: torch.Tensor, kernel, stride, padding, ceil_mode: bool, fill: float) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H', W', kh * kw]: the windows of a 2-d pooling (dilation 1), padded with
    `fill` where max_pool2d would pad with -inf, including ceil mode's extra windows."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride or kernel), _pair(padding)
    sizes = []
    for n, k, s, p in ((t.shape[-2], kh, sh, ph), (t.shape[-1], kw, sw, pw)):
        span = n + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= n + p:  # a last window starting in the right padding is dropped
            out -= 1
        sizes.append((out, max(0, (out - 1) * s + k - n - p)))
    (oh, rh), (ow, rw) = sizes
    t = F.pad(t, (pw, rw, ph, rh), value=fill)
    return t.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow].flatten(-2)


def max_pool(x: Moments, kernel, stride=None, padding=0, ceil_mode: bool = False) -> Moments:
    """2-d max pooling: Clark's max taken over each window's elements in turn."""
    m, v = x
    if v is None:
        return F.max_pool2d(m, kernel, stride, padding, ceil_mode=ceil_mode), None
    mw = _pool_windows(m, kernel, stride, padding, ceil_mode, -1e15)  # a padded entry never wins
    vw = _pool_windows(v, kernel, stride, padding, ceil_mode, 0.0)
    out = (mw[..., 0], vw[..., 0])
    for k in range(1, mw.shape[-1]):
        out = clark_max(out, (mw[..., k], vw[..., k]))
    return out


def avg_pool(x: Moments, kernel, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override=None) -> Moments:
    """2-d average pooling: a mean of d independent entries has variance avg(v) / d."""
    m, v = x
    args = (kernel, stride if stride is not None else kernel, padding, ceil_mode, count_include_pad, divisor_override)
    mean = F.avg_pool2d(m, *args)
    if v is None:
        return mean, None
    sums = F.avg_pool2d(v, kernel, args[1], padding, ceil_mode, count_include_pad, 1)  # sum of variances
    if divisor_override:
        divisor = float(divisor_override)
    else:  # the divisor avg_pool2d used at each output: the window size, or its count of real entries
        ones = torch.ones_like(v[:1, :1])
        divisor = F.avg_pool2d(ones, kernel, args[1], padding, ceil_mode, count_include_pad, 1) \
            / F.avg_pool2d(ones, *args)
    return mean, sums / (divisor * divisor)


def _adaptive_weights(n: int, o: int, like: torch.Tensor) -> torch.Tensor:
    """[o, n]: adaptive average pooling along one axis as a matrix (windows [floor(i n/o), ceil((i+1) n/o)))."""
    w = torch.zeros(o, n, dtype=like.dtype, device=like.device)
    for i in range(o):
        start, end = (i * n) // o, -((-(i + 1) * n) // o)
        w[i, start:end] = 1.0 / (end - start)
    return w


def adaptive_avg_pool(x: Moments, output_size) -> Moments:
    m, v = x
    oh, ow = _pair(output_size)
    oh, ow = oh or m.shape[-2], ow or m.shape[-1]
    mean = F.adaptive_avg_pool2d(m, (oh, ow))
    if v is None:
        return mean, None
    wh, ww = _adaptive_weights(m.shape[-2], oh, v), _adaptive_weights(m.shape[-1], ow, v)
    return mean, torch.einsum("ih,bchw,jw->bcij", wh * wh, v, ww * ww)


def add(a: Moments, b: Moments) -> Moments:
    """A sum of two values taken as independent (a residual block's branches)."""
    (m1, v1), (m2, v2) = a, b
    var = v1 if v2 is None else v2 if v1 is None else v1 + v2
    return m1 + m2, var


def batch_norm(x: Moments, bn) -> Moments:
    """An eval-mode batch norm: the affine map y = a (x - running_mean) + beta."""
    m, v = x
    a = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight
    shape = (1, -1) + (1,) * (m.dim() - 2)
    mean = (m - bn.running_mean.view(shape)) * a.view(shape)
    if bn.bias is not None:
        mean = mean + bn.bias.view(shape)
    return mean, (None if v is None else v * (a * a).view(shape))


def sign(x: Moments) -> Moments:
    """The binary activation of the dissertation's QNNs, +1 where h > 0 and -1 elsewhere, for
    h ~ N(m, v): with p = P(h > 0) = Phi(m / s), E = 2p - 1 and Var = 4 p (1 - p)."""
    m, v = x
    if v is None:
        return 2.0 * (m > 0).to(m.dtype) - 1.0, None
    p = _cdf(m / torch.sqrt(v.clamp_min(VAR_FLOOR)))
    return 2.0 * p - 1.0, 4.0 * p * (1.0 - p)


def staircase(x: Moments, step: torch.Tensor, top: int) -> Moments:
    """A quantised ReLU, step x clamp(round(h / step), 0, top), for h ~ N(m, v). It is step times the
    number of thresholds t_k = (k - 1/2) step (k = 1 .. top) that h exceeds, so with P_k = P(h > t_k):
    E = step sum_k P_k, and, since n^2 = sum_{k <= n} (2k - 1), E[.^2] = step^2 sum_k (2k - 1) P_k."""
    m, v = x
    if v is None:
        return torch.clamp(torch.round(m / step), 0, top) * step, None
    s = torch.sqrt(v.clamp_min(VAR_FLOOR))
    count, second = torch.zeros_like(m), torch.zeros_like(m)
    for k in range(1, top + 1):
        p = _cdf((m - (k - 0.5) * step) / s)
        count, second = count + p, second + (2 * k - 1) * p
    return step * count, (step * step) * (second - count * count).clamp_min(0.0)


def binary_max_pool(x: Moments, kernel, stride=None, padding=0, ceil_mode: bool = False) -> Moments:
    """2-d max pooling of independent {-1, +1} values (sign activations), exactly: with p = P(+1) =
    (1 + m) / 2 per entry, the window's maximum is +1 unless every entry is -1, P = 1 - prod (1 - p).
    (Clark's Gaussian moment matching is far off for two-point distributions.)"""
    m, v = x
    if v is None:
        return F.max_pool2d(m, kernel, stride, padding, ceil_mode=ceil_mode), None
    p_minus = _pool_windows((1.0 - m) / 2, kernel, stride, padding, ceil_mode, 1.0)  # a padded entry never wins
    p = 1.0 - p_minus.clamp(0.0, 1.0).prod(-1)
    return 2.0 * p - 1.0, 4.0 * p * (1.0 - p)


class Gauss(NamedTuple):
    """A value's moments under propagation: its mean, and its variance (None: deterministic)."""

    mean: torch.Tensor
    var: torch.Tensor | None


def copied(fn, *args, **kwargs):
    """`fn` (a selection, reshape, padding with zeros: it copies entries) applied to every Gauss argument's
    mean, then to its variance."""
    def pick(v, which):
        if isinstance(v, Gauss):
            return v.mean if which == 0 else v.var
        if isinstance(v, (list, tuple)):
            return type(v)(pick(u, which) for u in v)
        return v
    mean = fn(*pick(args, 0), **pick(kwargs, 0))
    gauss_args = [a for a in args if isinstance(a, Gauss)]
    if all(a.var is None for a in gauss_args):
        return Gauss(mean, None)
    return Gauss(mean, fn(*pick(args, 1), **pick(kwargs, 1)))
