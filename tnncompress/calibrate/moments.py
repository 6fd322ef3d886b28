"""The first and second moments of a layer's input patches and its target outputs on the calibration
pool: everything a least-squares fit of the layer's output needs.

For a convolution, the output at each position is W x + b, where x is the patch the kernel sees (the
im2col column, K = in_channels/groups x kh x kw entries per group). With E[x x^T], E[x], E[x t^T], E[t]
and E[t^2] (t the target at that position), the mean squared error of any kernel, bias and per-channel
affine is a quadratic form in small matrices, whatever the number of images: data-aware Layer-Decomp
fits factors against these moments, not against the activations themselves.

The patches are never formed for a convolution (they hold kh x kw copies of the input). E[x t^T] is the
weight gradient of the convolution, which PyTorch computes directly. E[x x^T] of a stride-1 convolution
only depends, between two kernel taps, on their offset and on which output positions both see: it is a
correlation of the padded input with itself at the (2kh-1) x (2kw-1) offsets, summed over the whole padded
grid, less the few border rows and columns that a tap's window does not cover (inclusion-exclusion: the
sums over those rows, those columns and their crossings are formed separately). That is 3 to 5 times
fewer operations than the im2col product and no copy of the input; strided convolutions (and grids too
small for borders to be disjoint) take the im2col product.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

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


def _padded(x: torch.Tensor, layer: TensorizedConv2d) -> torch.Tensor:
    """The input as the kernel sees it: every padding (any mode, as nn.Conv2d applies it) done."""
    if layer.pads_explicitly() or isinstance(layer.padding, str):
        pads = layer.explicit_pads() if layer.padding != "valid" else [(0, 0), (0, 0)]
        mode = layer.padding_mode if layer.padding_mode != "zeros" else "constant"
    else:
        pads, mode = [(p, p) for p in layer.padding], "constant"
    flat = [v for lo_hi in reversed(pads) for v in lo_hi]
    return F.pad(x, flat, mode=mode) if any(flat) else x


def patches(x: torch.Tensor, layer: TensorizedLayer) -> torch.Tensor:
    """The input patches of `layer` for input `x`, [B, g, K, P] (P output positions)."""
    s = layer.shape
    if not isinstance(layer, TensorizedConv2d):  # a linear layer: one position, the features
        return x.reshape(-1, 1, x.shape[-1], 1)
    cols = F.unfold(_padded(x, layer), (s.kh, s.kw), dilation=layer.dilation, stride=layer.stride)
    return cols.reshape(x.shape[0], s.groups, s.in_channels * s.kh * s.kw, -1)


FASTER = 0.5  # measured on CPU (ResNet-32's stages, 128 images, 2 threads): at 28x28 the shifted sums take
# 0.45 of the im2col product's operations and 0.6 of its time; at 14x14 0.63 and 1.1, at 7x7 1.06 and 2.4


class _ShiftedProducts:
    """Sums over a batch, kept apart until the end, from which E[x x^T] of a stride-1 convolution is
    assembled: the correlation of the padded input with itself at every tap offset over the whole grid
    (`full`), over each border row and column, and at each border crossing."""

    def __init__(self, layer: TensorizedConv2d, grid: tuple[int, int]):
        s = self.shape = layer.shape
        self.dh, self.dw = layer.dilation
        self.rows, self.cols = grid  # the padded input's
        self.out_h = self.rows - self.dh * (s.kh - 1)
        self.out_w = self.cols - self.dw * (s.kw - 1)
        edge_h, edge_w = self.dh * (s.kh - 1), self.dw * (s.kw - 1)
        self.border_rows = [*range(edge_h), *range(self.rows - edge_h, self.rows)]
        self.border_cols = [*range(edge_w), *range(self.cols - edge_w, self.cols)]
        self.sums: dict[str, torch.Tensor] = {}

    @staticmethod
    def applies(layer: TensorizedLayer, grid: tuple[int, int]) -> bool:
        """Stride 1, a grid large enough that its top and bottom (left and right) borders are apart, and
        fewer operations than the im2col product: less than FASTER of its count, as measured on CPU (the
        border sums run at a fraction of the speed of the whole grid's)."""
        if not isinstance(layer, TensorizedConv2d) or tuple(layer.stride) != (1, 1):
            return False
        s = layer.shape
        edges = [d * (k - 1) for d, k in zip(layer.dilation, (s.kh, s.kw), strict=True)]
        if not all(n - e >= e for n, e in zip(grid, edges, strict=True)):
            return False
        (rows, cols), (eh, ew) = grid, edges
        positions = (rows - eh) * (cols - ew)
        im2col = positions * (s.kh * s.kw) ** 2
        border = 2 * eh * cols + 2 * ew * rows + 4 * eh * ew
        shifted = (2 * s.kh - 1) * (2 * s.kw - 1) * (rows * cols + border)
        return shifted < FASTER * im2col

    def _corr(self, padded: torch.Tensor, wide: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        """sum over q in rows [r0, r1) x cols [c0, c1) of padded[c, q + offset] padded[c', q]:
        [C (c'), C/g (c), 2kh-1, 2kw-1], offsets from -(k-1) to k-1 taps."""
        s = self.shape
        eh, ew = 2 * self.dh * (s.kh - 1), 2 * self.dw * (s.kw - 1)
        return conv2d_weight(wide[:, :, r0:r1 + eh, c0:c1 + ew], (padded.shape[1], s.in_channels, 2 * s.kh - 1,
                             2 * s.kw - 1), padded[:, :, r0:r1, c0:c1], dilation=(self.dh, self.dw), groups=s.groups)

    def add(self, padded: torch.Tensor) -> None:
        s = self.shape
        eh, ew = self.dh * (s.kh - 1), self.dw * (s.kw - 1)
        wide = F.pad(padded, (ew, ew, eh, eh))  # zeros beyond the grid: only ever multiplied by terms removed
        parts = {"full": self._corr(padded, wide, 0, self.rows, 0, self.cols)}
        for r in self.border_rows:
            parts[f"r{r}"] = self._corr(padded, wide, r, r + 1, 0, self.cols)
        for c in self.border_cols:
            parts[f"c{c}"] = self._corr(padded, wide, 0, self.rows, c, c + 1)
        if self.border_rows and self.border_cols:  # every crossing at once: its neighbourhood times itself
            rows = torch.tensor(self.border_rows)[:, None, None, None]
            cols = torch.tensor(self.border_cols)[None, :, None, None]
            i = torch.arange(2 * s.kh - 1)[None, None, :, None] * self.dh
            j = torch.arange(2 * s.kw - 1)[None, None, None, :] * self.dw
            around = wide[:, :, rows + i, cols + j]  # [N, C, R, Cc, 2kh-1, 2kw-1]
            centre = padded[:, :, rows[..., 0, 0], cols[..., 0, 0]]  # [N, C, R, Cc]
            g, cg = s.groups, s.in_channels
            around = around.reshape(around.shape[0], g, cg, *around.shape[2:])
            centre = centre.reshape(centre.shape[0], g, cg, *centre.shape[2:])
            parts["points"] = torch.einsum("ngcrqij,ngdrq->rqgdcij", around, centre).flatten(2, 3)
        for key, value in parts.items():
            self.sums[key] = self.sums[key] + value.double() if key in self.sums else value.double()

    def xx(self) -> torch.Tensor:
        """E[x x^T] summed (not yet averaged): [g, K, K]."""
        s, sums = self.shape, self.sums
        kh, kw = s.kh, s.kw
        rows, cols = self.border_rows, self.border_cols
        windows = torch.empty(kh, kw, *sums["full"].shape, dtype=torch.float64)
        for a in range(kh):  # the rows tap a's window leaves out, and the columns tap b's
            out_r = [k for k, r in enumerate(rows) if not self.dh * a <= r < self.dh * a + self.out_h]
            for b in range(kw):
                out_c = [k for k, c in enumerate(cols) if not self.dw * b <= c < self.dw * b + self.out_w]
                w = sums["full"].clone()
                for k in out_r:
                    w -= sums[f"r{rows[k]}"]
                for k in out_c:
                    w -= sums[f"c{cols[k]}"]
                if out_r and out_c:
                    w += sums["points"][out_r][:, out_c].sum((0, 1))
                windows[a, b] = w
        # xx[(c, a, b), (c', a', b')] = windows[a', b'][c', c, a - a' + kh - 1, b - b' + kw - 1]
        g, cg = s.groups, s.in_channels
        windows = windows.reshape(kh, kw, g, cg, cg, 2 * kh - 1, 2 * kw - 1)
        a = torch.arange(kh)[:, None, None, None]
        b = torch.arange(kw)[None, :, None, None]
        a2 = torch.arange(kh)[None, None, :, None]
        b2 = torch.arange(kw)[None, None, None, :]
        taps = windows[a2, b2, :, :, :, a - a2 + kh - 1, b - b2 + kw - 1]  # [a, b, a', b', g, c', c]
        return taps.permute(4, 6, 0, 1, 5, 2, 3).reshape(g, cg * kh * kw, cg * kh * kw)


def _columns(padded: torch.Tensor, layer: TensorizedConv2d) -> torch.Tensor:
    """The patches as columns [g, K, B * P], (c, a, b) order as im2col's, written tap by tap from strided
    views of the input (a third of the time of unfold followed by the transposing copy)."""
    s = layer.shape
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    n, channels, rows, cols = padded.shape
    out_h, out_w = (rows - dh * (s.kh - 1) - 1) // sh + 1, (cols - dw * (s.kw - 1) - 1) // sw + 1
    columns = padded.new_empty(channels, s.kh, s.kw, n, out_h, out_w)
    for a in range(s.kh):
        for b in range(s.kw):
            tap = padded[:, :, dh * a:dh * a + sh * (out_h - 1) + 1:sh, dw * b:dw * b + sw * (out_w - 1) + 1:sw]
            columns[:, a, b] = tap.transpose(0, 1)
    return columns.reshape(s.groups, s.in_channels * s.kh * s.kw, -1)


def _gram_halves(flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """flat flat^T [g, K, K] is symmetric: its first half of rows and the last diagonal block are enough
    (3/4 of the product); `_whole_gram` puts them together."""
    half = flat.shape[1] // 2
    rest = flat[:, half:]
    return {"xx_top": flat[:, :half] @ flat.transpose(1, 2), "xx_corner": rest @ rest.transpose(1, 2)}


def _whole_gram(top: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
    half = top.shape[1]
    return torch.cat([top, torch.cat([top[:, :, half:].transpose(1, 2), corner], 2)], 1)


def _conv_parts(source: torch.Tensor, t: torch.Tensor, layer: TensorizedConv2d,
                shifted: _ShiftedProducts | None) -> dict[str, torch.Tensor]:
    """One batch's sums over positions for a convolution; t is [B, g, T, Ho, Wo]."""
    s = layer.shape
    padded = _padded(source, layer)
    n, g = padded.shape[0], s.groups
    xt = conv2d_weight(padded, (s.groups * s.t, s.in_channels, s.kh, s.kw), t.reshape(n, g * s.t, *t.shape[-2:]),
                       stride=layer.stride, dilation=layer.dilation, groups=g)
    parts = {"xt": xt.reshape(g, s.t, -1).transpose(1, 2)}
    if shifted is None:
        flat = _columns(padded, layer)  # [g, K, B * P]
        parts |= _gram_halves(flat)
        parts["x"] = flat.sum(-1)
    else:
        shifted.add(padded)
        dh, dw, image = *layer.dilation, padded.sum(0)  # the window sums of the batch's sum
        sums = [image[:, dh * a:dh * a + shifted.out_h, dw * b:dw * b + shifted.out_w].sum((1, 2))
                for a in range(s.kh) for b in range(s.kw)]  # [kh*kw][C]
        parts["x"] = torch.stack(sums, -1).reshape(g, -1)  # (c, a, b) order, as the patches'
    return parts


def collect_moments(layer: TensorizedLayer, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> LayerMoments:
    """Moments of `layer`'s input patches and its targets over batches of (layer input, target output).
    The products are formed per batch in float32 (float64 for float64 inputs) and summed in float64."""
    g, t_per = layer.shape.groups, layer.shape.t
    acc: dict[str, torch.Tensor] = {}
    count = 0
    shifted, geometry = None, None  # how E[xx^T] is formed: decided on the first batch, for the shapes it has
    for source, target in pairs:
        dtype = torch.float64 if source.dtype == torch.float64 else torch.float32
        source, target = source.to(dtype), target.to(dtype)
        t = target.reshape(target.shape[0], g, t_per, -1)  # [B, g, T, P]
        if isinstance(layer, TensorizedConv2d):
            if geometry != (source.shape[1:], target.shape[1:]):
                if patches(source[:1], layer).shape[-1] != t.shape[-1]:
                    raise RuntimeError(f"{patches(source[:1], layer).shape[-1]} input patches for {t.shape[-1]} "
                                       "output positions")
                if geometry is None:
                    padded_grid = tuple(_padded(source[:1], layer).shape[-2:])
                    shifted = (_ShiftedProducts(layer, padded_grid) if _ShiftedProducts.applies(layer, padded_grid)
                               else None)
                else:
                    raise RuntimeError("the layer's inputs change shape between batches")
                geometry = (source.shape[1:], target.shape[1:])
            parts = _conv_parts(source, target.reshape(target.shape[0], g, t_per, *target.shape[-2:]), layer,
                                shifted)
            positions = target.shape[-2] * target.shape[-1]
        else:
            flat = source.reshape(1, -1, source.shape[-1])  # [1, B, K]
            parts = {"xx": flat.transpose(1, 2) @ flat, "x": flat.sum(1),
                     "xt": flat.transpose(1, 2) @ t.reshape(1, -1, t_per)}
            positions = 1
        parts |= {"t": t.sum((0, 3)), "tt": (t * t).sum((0, 3))}
        for key, value in parts.items():
            acc[key] = acc[key] + value.double() if key in acc else value.double()
        count += source.shape[0] * positions
    if shifted is not None:
        acc["xx"] = shifted.xx()
    elif "xx_top" in acc:
        acc["xx"] = _whole_gram(acc.pop("xx_top"), acc.pop("xx_corner"))
    return LayerMoments(**{k: v / count for k, v in acc.items()}, count=count)
