"""Lipschitz gains (L2) of single operations, for the network bound of spectral/lipschitz.py."""

from __future__ import annotations

import math

import torch
from torch import nn

# The largest slope of element-wise activations: GELU's, SiLU's and Mish's maxima of the derivative were
# computed on a fine grid (1.128904, 1.099839, 1.088498) and rounded up, so the bound stays certified.
GELU, SILU, MISH = 1.1290, 1.0999, 1.0885


def bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """The per-channel gain of an eval-mode batch norm, gamma / sqrt(var + eps)."""
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def window_gain(kernel, stride, dilation=1, average: bool = False) -> float:
    """Max (or average) pooling: sqrt(how many windows can cover one input), over the window size for an
    average (Cauchy-Schwarz)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    sh, sw = sh or kh, sw or kw
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    cover_h = kh if dh > 1 else math.ceil(kh / sh)
    cover_w = kw if dw > 1 else math.ceil(kw / sw)
    gain = math.sqrt(cover_h * cover_w)
    return gain / math.sqrt(kh * kw) if average else gain


def adaptive_gain(in_hw, out_hw) -> float:
    """Adaptive average pooling: windows [floor(i n/o), ceil((i+1) n/o)); gain sqrt(max cover / min window)."""
    gains = []
    for n, o in zip(in_hw, out_hw, strict=True):
        o = o or n
        starts = [(i * n) // o for i in range(o)]
        ends = [-((-(i + 1) * n) // o) for i in range(o)]
        cover = max(sum(1 for s, e in zip(starts, ends, strict=True) if s <= j < e) for j in range(n))
        gains.append(cover / min(e - s for s, e in zip(starts, ends, strict=True)))
    return math.sqrt(gains[0] * gains[1])


def basic_index(index) -> bool:
    """An index of slices, integers, None and Ellipsis only (no tensor: advanced indexing can repeat)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in items)
