"""CP formats.

`cp` (Lebedev et al. 2015): K[t,s,h,w] = sum_r S[r,s] H[r,h] W[r,w] T[r,t]: a 1x1 conv S -> R, depthwise
kh x 1 and 1 x kw convolutions, a 1x1 conv R -> T. Layer-Decomp: CP-ALS of the 4-way kernel.

`mcp` (dissertation Fig. 2.6a): the kernel reshaped to T1..Tm x S1..Sm x kh x kw, each pair (Ti, Si) a
factor R x Ti x Si and the filter a factor R x kh x kw; parameters R (sum Ti Si + kh kw). Layer-Decomp:
CP-ALS of the (m+1)-way tensor with modes (Ti Si) and (kh kw).

Rank rule: the one rank R, as large as the budget allows.
"""

from __future__ import annotations

from .base import Format, KernelShape, register_format
from .tensorize import interleave


class CP(Format):
    name = "cp"
    description = "CP of the kernel (Lebedev et al.): 1x1, depthwise kh x 1, depthwise 1 x kw, 1x1"

    def terms(self, tz):
        return [("r", "s"), ("r", "h"), ("r", "w"), ("r", "t")]

    def rank_names(self, tz):
        return ["r"]

    def ranks_for_budget(self, shape: KernelShape, tz, budget):
        per_rank = self.params(shape, tz, {"r": 1})
        r = budget // per_rank
        return {"r": r} if r >= 1 else None

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        factors = dec.cp(kernel.permute(1, 2, 3, 0).contiguous(), ranks["r"], seed)  # modes s, h, w, t
        return [f.T.contiguous() for f in factors]


class MCP(CP):
    name = "mcp"
    reshaped = True
    description = "reshaped CP (TNN-mCP): factors R x Ti x Si and R x kh x kw"

    def terms(self, tz):
        return [("r", f"t{i + 1}", f"s{i + 1}") for i in range(tz.m)] + [("r", "h", "w")]

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        m, (_t, _s, kh, kw) = tz.m, kernel.shape
        factors = dec.cp(interleave(kernel, tz, first="t").contiguous(), ranks["r"], seed)
        r = ranks["r"]
        out = [f.T.reshape(r, to, si) for f, to, si in zip(factors[:m], tz.out_modes, tz.in_modes, strict=True)]
        return out + [factors[m].T.reshape(r, kh, kw)]


register_format(CP())
register_format(MCP())
