"""Tensor-train formats.

`tt`: a train over the modes S, kh, kw, T: cores S x R1, R1 x kh x R2, R2 x kw x R3, R3 x T.
`mtt` (dissertation Eq. 2.3-2.4): the kernel reshaped, cores S1 x T1 x R1, R(i-1) x Si x Ti x Ri, and
R x kh x kw last.
Layer-Decomp: TT-SVD. Rank rule: one bond rank R for every bond, each capped at its largest useful
value (the smaller product of mode sizes on either side), as large as the budget allows.
"""

from __future__ import annotations

from ..decompose import max_tt_ranks
from .base import Format, KernelShape, largest, register_format
from .tensorize import interleave


class TT(Format):
    name = "tt"
    description = "tensor train over the modes S, kh, kw, T"

    def terms(self, tz):
        return [("s", "r1"), ("r1", "h", "r2"), ("r2", "w", "r3"), ("r3", "t")]

    def rank_names(self, tz):
        return ["r1", "r2", "r3"]

    def _train_shape(self, dims: tuple[int, int, int, int], tz) -> tuple[int, ...]:
        """The modes of the train, from the kernel's (T, S, kh, kw)."""
        t, s, kh, kw = dims
        return (s, kh, kw, t)

    def rank_caps(self, shape: KernelShape, tz):
        caps = max_tt_ranks(self._train_shape(_dims(shape), tz))
        return dict(zip(self.rank_names(tz), caps, strict=True))

    def effective_ranks(self, shape: KernelShape, tz, ranks):
        """Bond k joins modes n_k and n_(k+1): TT-SVD gives it at most r_(k-1) n_k and n_(k+1) r_(k+1)."""
        dims = self._train_shape(_dims(shape), tz)
        names = self.rank_names(tz)
        full = [1, *(min(ranks[n], cap) for n, cap in zip(names, max_tt_ranks(dims), strict=True)), 1]
        for k in range(1, len(full) - 1):
            full[k] = min(full[k], full[k - 1] * dims[k - 1])
        for k in range(len(full) - 2, 0, -1):
            full[k] = min(full[k], dims[k] * full[k + 1])
        return dict(zip(names, full[1:-1], strict=True))

    def _ranks(self, shape, tz, r: int) -> dict[str, int]:
        return {name: min(r, cap) for name, cap in self.rank_caps(shape, tz).items()}

    def ranks_for_budget(self, shape: KernelShape, tz, budget):
        top = max(max_tt_ranks(self._train_shape(_dims(shape), tz)))
        r = largest(range(1, top + 1), lambda r: self.params(shape, tz, self._ranks(shape, tz, r)), budget)
        return None if r is None else self._ranks(shape, tz, r)

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        cores = dec.tt(kernel.permute(1, 2, 3, 0).contiguous(), [ranks[n] for n in self.rank_names(tz)])
        return [cores[0][0], cores[1], cores[2], cores[3][..., 0]]


class MTT(TT):
    name = "mtt"
    reshaped = True
    description = "reshaped tensor train (TNN-mTT): S1 x T1 x R1, R x Si x Ti x R, ..., R x kh x kw"

    def terms(self, tz):
        m = tz.m
        cores = [("s1", "t1", "r1")] + [(f"r{i}", f"s{i + 1}", f"t{i + 1}", f"r{i + 1}") for i in range(1, m)]
        return cores + [(f"r{m}", "h", "w")]

    def rank_names(self, tz):
        return [f"r{i + 1}" for i in range(tz.m)]

    def _train_shape(self, dims, tz):
        return (*(s * t for s, t in zip(tz.in_modes, tz.out_modes, strict=True)), dims[2] * dims[3])

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        m, (_, _, kh, kw) = tz.m, kernel.shape
        cores = dec.tt(interleave(kernel, tz, first="s").contiguous(), [ranks[n] for n in self.rank_names(tz)])
        out = []
        for i, core in enumerate(cores[:m]):
            r_in, _, r_out = core.shape
            c = core.reshape(r_in, tz.in_modes[i], tz.out_modes[i], r_out)
            out.append(c[0] if i == 0 else c)
        return out + [cores[m].reshape(cores[m].shape[0], kh, kw)]


def _dims(shape: KernelShape) -> tuple[int, int, int, int]:
    return (shape.t, shape.in_channels, shape.kh, shape.kw)


register_format(TT())
register_format(MTT())
