"""Tensor-ring formats.

`tr`: a ring over the modes S, kh, kw, T: cores R0 x S x R1, R1 x kh x R2, R2 x kw x R3, R3 x T x R0.
`mtr` (dissertation Fig. 2.6c): the kernel reshaped, cores R(i-1) x Si x Ti x Ri and R x kh x kw x R0
closing the ring; parameters about R^2 (sum Si Ti + kh kw).
Layer-Decomp: TR-ALS initialised from TT-SVD. Rank rule: one rank R for every bond of the ring, as large
as the budget allows (at most the largest mode size).
"""

from __future__ import annotations

from .base import Format, KernelShape, largest, register_format
from .tensorize import interleave


class TR(Format):
    name = "tr"
    description = "tensor ring over the modes S, kh, kw, T"

    def terms(self, tz):
        return [("r0", "s", "r1"), ("r1", "h", "r2"), ("r2", "w", "r3"), ("r3", "t", "r0")]

    def rank_names(self, tz):
        return ["r0", "r1", "r2", "r3"]

    def _ring_shape(self, dims, tz) -> tuple[int, ...]:
        t, s, kh, kw = dims
        return (s, kh, kw, t)

    def effective_ranks(self, shape: KernelShape, tz, ranks):
        """Core k is R_k x n_k x R_(k+1): a bond rank above R_k n_k (or n_k R_(k+1) on the other side)
        adds parameters and nothing else, so ranks are tightened around the ring until they settle."""
        n = self._ring_shape((shape.t, shape.in_channels, shape.kh, shape.kw), tz)
        names = self.rank_names(tz)
        r = [ranks[name] for name in names]
        d = len(r)
        changed = True
        while changed:
            changed = False
            for k in range(d):
                nxt = (k + 1) % d
                bounded = min(r[nxt], r[k] * n[k]), min(r[k], n[k] * r[nxt])
                if bounded != (r[nxt], r[k]):
                    r[nxt], r[k], changed = bounded[0], bounded[1], True
        return dict(zip(names, r, strict=True))

    def ranks_for_budget(self, shape: KernelShape, tz, budget):
        dims = (shape.t, shape.in_channels, shape.kh, shape.kw)
        top = max(self._ring_shape(dims, tz))
        names = self.rank_names(tz)
        r = largest(range(1, top + 1), lambda r: self.params(shape, tz, dict.fromkeys(names, r)), budget)
        return None if r is None else dict.fromkeys(names, r)

    def _ring(self, kernel, tz):
        return kernel.permute(1, 2, 3, 0)

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        ring = self._ring(kernel, tz).contiguous()
        return self._split(dec.tr(ring, [ranks[n] for n in self.rank_names(tz)], seed), kernel, tz)

    def _split(self, cores, kernel, tz):
        return cores


class MTR(TR):
    name = "mtr"
    reshaped = True
    description = "reshaped tensor ring (TNN-mTR): R x Si x Ti x R cores and R x kh x kw x R0"

    def terms(self, tz):
        m = tz.m
        cores = [(f"r{i}", f"s{i + 1}", f"t{i + 1}", f"r{i + 1}") for i in range(m)]
        return cores + [(f"r{m}", "h", "w", "r0")]

    def rank_names(self, tz):
        return [f"r{i}" for i in range(tz.m + 1)]

    def _ring_shape(self, dims, tz):
        return (*(s * t for s, t in zip(tz.in_modes, tz.out_modes, strict=True)), dims[2] * dims[3])

    def _ring(self, kernel, tz):
        return interleave(kernel, tz, first="s")

    def _split(self, cores, kernel, tz):
        m, (_, _, kh, kw) = tz.m, kernel.shape
        out = [c.reshape(c.shape[0], tz.in_modes[i], tz.out_modes[i], c.shape[2]) for i, c in enumerate(cores[:m])]
        return out + [cores[m].reshape(cores[m].shape[0], kh, kw, cores[m].shape[2])]


register_format(TR())
register_format(MTR())
