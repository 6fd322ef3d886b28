"""Orthogonal convolutions by separable complete factorisation (SC-Fac; Su, Byeon & Huang 2022,
dissertation chapter 7).

A convolution is orthogonal iff its transfer matrix H(z) is paraunitary (unitary on |z| = 1). A 1-D
paraunitary system of K taps is Q times K - 1 degree-one factors, each P + (I - P) z^-1 (on the input
side) or (I - P) + P z^-1 (on the output side) with P = U U^T a projector: each factor is paraunitary
because P (I - P) = 0, so the product is, exactly, whatever the parameters. Two such systems, one per
spatial axis, multiply into a separable 2-D one: kernel[t, s, i, j] = sum_r F_w[j][t, r] F_h[i][r, s].

The variants of Table 7.1 are the same system seen through a reshape: stride s builds C = max(T, S s_h
s_w) channels with k / s taps per axis and interleaves them back into a T x S x k kernel (the inverse
of the polyphase split in fft.py); dilation applies the kernel at spaced taps (H(z^d) is paraunitary);
groups build one system per group. Cropping C x C to T x (S s^2) keeps orthonormal rows (T < S s^2:
gradient-norm preserving) or columns (T > S s^2: norm preserving).

Orthogonal matrices are B exp(A - A^T) with B fixed at initialisation (all of O(C), as GeoTorch does),
U the first n columns of one. The kernel depends on the parameters only, so it is computed once per
forward pass in training and cached in eval; inference is one F.conv2d. The operator is exactly
orthogonal with circular padding (output n / s); with zero padding it is the circular one restricted
to a window, so every singular value is <= 1: the layer is 1-Lipschitz.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .fft import pair


def _orthogonal(base: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
    """base @ exp(A - A^T): orthogonal for any A (batched over leading modes)."""
    return base @ torch.linalg.matrix_exp(skew - skew.mT)


def _haar(*shape: int, generator: torch.Generator, dtype) -> torch.Tensor:
    """Haar-random orthogonal matrices [..., C, C] (QR of a Gaussian, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(*shape, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]).to(dtype)


def paraunitary_taps(q: torch.Tensor, projectors: list[torch.Tensor]) -> torch.Tensor:
    """The taps [K, ..., C, C] of F(z) = ... V_l2 V_l1 Q V_r1 V_r2 ... with projectors alternating input
    side (even positions), output side (odd): K = len(projectors) + 1 taps, paraunitary."""
    taps = q[None]
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    for i, p in enumerate(projectors):
        zero = torch.zeros_like(taps[:1])
        now, delayed = torch.cat([taps, zero]), torch.cat([zero, taps])  # F(z) and z^-1 F(z)
        if i % 2 == 0:  # F(z) (P + (I - P) z^-1)
            taps = now @ p + delayed @ (eye - p)
        else:  # ((I - P) + P z^-1) F(z)
            taps = (eye - p) @ now + p @ delayed
    return taps


class OrthogonalConv2d(nn.Module):
    """A T x S x kh x kw convolution (stride, dilation, groups, padding as nn.Conv2d) whose operator is
    orthogonal by construction (with circular padding; 1-Lipschitz with zero padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = False, padding_mode: str = "circular", seed: int = 0,
                 dtype: torch.dtype | None = None):
        super().__init__()
        kernel, stride, dilation = pair(kernel_size), pair(stride), pair(dilation)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels} -> {out_channels} do not split into {groups} groups")
        for k, s, d, axis in zip(kernel, stride, dilation, ("height", "width"), strict=True):
            if k % s:
                raise ValueError(f"kernel {axis} {k} is not a multiple of the stride {s}: an orthogonal strided "
                                 "convolution has stride x (taps per phase) taps")
            if s > 1 and d > 1:
                raise ValueError(f"stride {s} and dilation {d} on the {axis}: the paraunitary form takes one of them")
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode {padding_mode!r}: zeros or circular")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = kernel, stride, dilation
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.padding_mode = padding_mode
        self.t = out_channels // groups
        self.s = in_channels // groups * stride[0] * stride[1]  # input channels of the paraunitary system
        c = max(self.t, self.s)
        self.channels = c
        self.taps = (kernel[0] // stride[0], kernel[1] // stride[1])
        dtype = dtype or torch.get_default_dtype()
        g = torch.Generator().manual_seed(seed)
        # per axis: Q = base exp(skew); each projector from the first `rank` columns of another
        for axis, k in zip("hw", self.taps, strict=True):
            self.register_buffer(f"base_{axis}", _haar(groups, k, c, c, generator=g, dtype=dtype))
            setattr(self, f"skew_{axis}", nn.Parameter(torch.zeros(groups, k, c, c, dtype=dtype)))
        self.ranks = (c // 2, c // 2)
        self.bias = nn.Parameter(torch.zeros(out_channels, dtype=dtype)) if bias else None
        self._cached: tuple[tuple, torch.Tensor] | None = None
        self.identity_init()

    # --- the parameterisation ---------------------------------------------------------------------------

    def _axis_taps(self, axis: str) -> torch.Tensor:
        """[K', G, C, C]: the 1-D paraunitary system of one axis."""
        # in float64 whatever the parameters' dtype: a float32 kernel is then orthogonal to its rounding
        mats = _orthogonal(getattr(self, f"base_{axis}").double(), getattr(self, f"skew_{axis}").double())
        rank = self.ranks[0 if axis == "h" else 1]
        projectors = [m[..., :rank] @ m[..., :rank].mT for m in mats.unbind(1)[1:]]
        return paraunitary_taps(mats[:, 0], projectors)

    def weight_(self) -> torch.Tensor:
        """The kernel [out, in / groups, kh, kw] the parameters define (computed, not cached)."""
        fh, fw = self._axis_taps("h"), self._axis_taps("w")  # [K'h, G, C, C], [K'w, G, C, C]
        k = torch.einsum("jgtr,igrs->gtsij", fw, fh)[:, :self.t, :self.s]  # [G, T, S s^2, K'h, K'w]
        (sh, sw), (kh, kw) = self.stride, self.taps
        ci = self.s // (sh * sw)
        k = k.reshape(self.groups * self.t, ci, sh, sw, kh, kw).permute(0, 1, 4, 2, 5, 3)
        return k.reshape(self.out_channels, ci, kh * sh, kw * sw).to(self.skew_h.dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The kernel; cached while no gradient is wanted and the parameters are unchanged (distillation
        trains in eval mode: a gradient is wanted whenever autograd records and the parameters train)."""
        if torch.is_grad_enabled() and (self.skew_h.requires_grad or self.skew_w.requires_grad):
            self._cached = None
            return self.weight_()
        key = tuple((p.data_ptr(), p._version) for p in (self.skew_h, self.skew_w))
        if self._cached is None or self._cached[0] != key:
            with torch.no_grad():
                self._cached = (key, self.weight_())
        return self._cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode == "circular" and padding not in ((0, 0), "valid"):
            totals = ([d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
                      if padding == "same" else [2 * p for p in padding])
            x = F.pad(x, [totals[1] // 2, totals[1] - totals[1] // 2, totals[0] // 2, totals[0] - totals[0] // 2],
                      mode="circular")
            padding = 0
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    # --- initialisation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def identity_init(self, q: torch.Tensor | None = None) -> None:
        """A centred delta kernel, Q at the middle tap (Proposition 7.2: each output-side projector is
        the input-side one turned by Q, U_l = Q U_r), Q = `q` [G, C, C] on the height axis when given."""
        for axis in "hw":
            base, skew = getattr(self, f"base_{axis}"), getattr(self, f"skew_{axis}")
            skew.zero_()
            if axis == "h" and q is not None:
                base[:, 0] = q.to(base)
            elif axis == "w":
                base[:, 0] = torch.eye(self.channels, dtype=base.dtype)
            for i in range(2, base.shape[1], 2):  # output-side factors follow the input-side ones
                base[:, i] = base[:, 0] @ base[:, i - 1]
        self._cached = None

    def fit(self, target: torch.Tensor, steps: int = 200, lr: float = 0.05) -> float:
        """Move the parameters so the kernel approaches `target` [out, in / groups, kh, kw] (Adam on
        the squared distance, in the parameters' dtype); returns the final relative distance."""
        params = [self.skew_h, self.skew_w]
        optimizer = torch.optim.Adam(params, lr=lr)
        target = target.to(self.skew_h)
        scale = target.norm().clamp_min(1e-30)
        best, best_state = math.inf, None
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                loss = (self.weight_() - target).norm() / scale
                if float(loss.detach()) < best:
                    best, best_state = float(loss.detach()), [p.detach().clone() for p in params]
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            last = float((self.weight_() - target).norm() / scale)
            if last > best:
                for p, v in zip(params, best_state, strict=True):
                    p.copy_(v)
        self._cached = None
        return min(best, last)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, input_hw, steps: int = 200, seed: int = 0) -> tuple[OrthogonalConv2d, float]:
        """The orthogonal convolution closest (as far as `fit` gets) to the orthogonal polar factor of
        `conv` on its input size: every singular value of the pretrained operator set to 1, the
        result projected back to the kernel's taps, then fitted. Returns the layer and the relative
        distance of its kernel to that target."""
        from .clip import _clip  # the per-frequency SVD and the projection back to the taps
        from .layers import _grid

        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode
                    if conv.padding_mode in ("zeros", "circular") else "zeros", seed=seed,
                    dtype=conv.weight.dtype).to(conv.weight.device)
        w = conv.weight.detach().to(torch.float64)
        grid = _grid("conv", conv, pair(input_hw))[0]
        polar = _clip(w, grid, 0.0, layer.stride, layer.dilation, conv.groups, assign=1.0)[0]
        # start from the delta whose middle tap is the polar factor of the middle tap of the target's
        # polyphase system [T, S s_h s_w] (phases as in fft._phases): the delta nearest to the target
        (sh, sw), (kh, kw) = layer.stride, layer.taps
        phases = polar.reshape(conv.out_channels, -1, kh, sh, kw, sw).permute(0, 1, 3, 5, 2, 4)
        m = phases.reshape(conv.groups, layer.t, layer.s, kh, kw)[..., kh // 2, kw // 2]
        full = torch.zeros(conv.groups, layer.channels, layer.channels, dtype=torch.float64)
        full[:, :layer.t, :layer.s] = m
        u, _, vh = torch.linalg.svd(full)
        layer.identity_init(u @ vh)
        error = layer.fit(polar.to(layer.skew_h.dtype), steps=steps)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        return layer, error

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"padding_mode={self.padding_mode}")
