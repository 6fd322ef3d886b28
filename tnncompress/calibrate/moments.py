"""The first and second moments of a layer's input patches and its target outputs on the calibration
pool: everything a least-squares fit of the layer's output needs.

For a convolution, the output at each position is W x + b, where x is the patch the kernel sees (the
im2col column, K = in_channels/groups x kh x kw entries per group). With E[x x^T], E[x], E[x t^T], E[t]
and E[t^2] (t the target at that position), the mean squared error of any kernel, bias and per-channel
affine is a quadratic form in small matrices, whatever the number of images: data-aware Layer-Decomp
fits factors against these moments, not against the activations themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..formats import TensorizedConv2d, TensorizedLayer


@dataclass
class LayerMoments:
    """Moments over every output position of every pool image, per group g of the convolution."""

    xx: torch.Tensor  # [g, K, K]  E[x x^T]
    x: torch.Tensor  # [g, K]     E[x]
    xt: torch.Tensor  # [g, K, T]  E[x t^T]  (T output channels per group)
    t: torch.Tensor  # [g, T]     E[t]
    tt: torch.Tensor  # [g, T]     E[t^2]
    count: int  # positions averaged over

    def error(self, w: torch.Tensor, b: torch.Tensor, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """E ||s (W x + b) + c - t||^2 summed over the output channels, for W [g, T, K] and b, s, c [g, T]."""
        wx = torch.einsum("gtk,gk->gt", w, self.x)
        zz = torch.einsum("gtk,gkl,gtl->gt", w, self.xx, w) + 2 * b * wx + b * b  # E[z^2]
        z = wx + b  # E[z]
        zt = torch.einsum("gtk,gkt->gt", w, self.xt) + b * self.t  # E[z t]
        return (s * s * zz + 2 * s * c * z - 2 * s * zt + c * c - 2 * c * self.t + self.tt).sum()

    def target_energy(self) -> torch.Tensor:
        return self.tt.sum()


def patches(x: torch.Tensor, layer: TensorizedLayer) -> torch.Tensor:
    """The input patches of `layer` for input `x`, [B, g, K, P] (P output positions)."""
    s = layer.shape
    if not isinstance(layer, TensorizedConv2d):  # a linear layer: one position, the features
        return x.reshape(-1, 1, x.shape[-1], 1)
    if layer._pads_explicitly() or isinstance(layer.padding, str):
        pads = layer._explicit_pads() if layer.padding != "valid" else [(0, 0), (0, 0)]
        flat = [v for lo_hi in reversed(pads) for v in lo_hi]
        x = F.pad(x, flat, mode=layer.padding_mode if layer.padding_mode != "zeros" else "constant")
        padding = 0
    else:
        padding = layer.padding
    cols = F.unfold(x, (s.kh, s.kw), dilation=layer.dilation, padding=padding, stride=layer.stride)
    return cols.reshape(x.shape[0], s.groups, s.in_channels * s.kh * s.kw, -1)


def collect_moments(layer: TensorizedLayer, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> LayerMoments:
    """Moments of `layer`'s input patches and its targets over batches of (layer input, target output).
    The products are formed per batch in float32 (float64 for float64 inputs) and summed in float64."""
    g, t_per = layer.shape.groups, layer.shape.t
    acc: dict[str, torch.Tensor] = {}
    count = 0
    for source, target in pairs:
        dtype = torch.float64 if source.dtype == torch.float64 else torch.float32
        cols = patches(source.to(dtype), layer)  # [B, g, K, P]
        t = target.to(dtype).reshape(target.shape[0], g, t_per, -1)  # [B, g, T, P]
        if cols.shape[-1] != t.shape[-1]:
            raise RuntimeError(f"{cols.shape[-1]} input patches for {t.shape[-1]} output positions")
        parts = {"xx": torch.einsum("bgkp,bglp->gkl", cols, cols), "x": cols.sum((0, 3)),
                 "xt": torch.einsum("bgkp,bgtp->gkt", cols, t), "t": t.sum((0, 3)), "tt": (t * t).sum((0, 3))}
        for key, value in parts.items():
            acc[key] = acc[key] + value.double() if key in acc else value.double()
        count += cols.shape[0] * cols.shape[-1]
    return LayerMoments(**{k: v / count for k, v in acc.items()}, count=count)
