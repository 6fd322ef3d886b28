"""Tucker formats.

`tk` (Tucker-2; Kim et al. 2016): the channel modes factored, the filter kept: a 1x1 conv S -> R1, a
kh x kw conv R1 -> R2, a 1x1 conv R2 -> T. Layer-Decomp: HOOI on the two channel modes.

`mtk` (dissertation Fig. 2.6b): the kernel reshaped to T1..Tm x S1..Sm x kh x kw; a factor Si x a_i per
input mode, Ti x c_i per output mode, and a core a_1..a_m x c_1..c_m x kh x kw. Layer-Decomp: HOOI on
the 2m channel modes.

Rank rule: ranks proportional to the mode sizes, rank_i = clamp(round(alpha * size_i), 1, size_i), with
the largest alpha whose parameters fit the budget.
"""

from __future__ import annotations

from .base import Format, KernelShape, largest, register_format


def _proportional(sizes: dict[str, int], alpha: float) -> dict[str, int]:
    return {name: max(1, min(n, round(alpha * n))) for name, n in sizes.items()}


def _alphas(largest_mode: int):
    return [k / largest_mode for k in range(1, largest_mode + 1)]


class TK(Format):
    name = "tk"
    description = "Tucker-2 over the channel modes: 1x1 S -> R1, kh x kw R1 -> R2, 1x1 R2 -> T"

    def terms(self, tz):
        return [("s", "r1"), ("r1", "r2", "h", "w"), ("r2", "t")]

    def rank_names(self, tz):
        return ["r1", "r2"]

    def _rank_modes(self, shape: KernelShape, tz) -> dict[str, int]:
        return {"r1": shape.in_channels, "r2": shape.t}

    def rank_caps(self, shape: KernelShape, tz):
        return self._rank_modes(shape, tz)

    def ranks_for_budget(self, shape: KernelShape, tz, budget):
        modes = self._rank_modes(shape, tz)
        alpha = largest(_alphas(max(modes.values())),
                        lambda a: self.params(shape, tz, _proportional(modes, a)), budget)
        return None if alpha is None else _proportional(modes, alpha)

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        core, factors = dec.tucker(kernel, {0: ranks["r2"], 1: ranks["r1"]}, seed)
        core = core.permute(1, 0, 2, 3)  # [r1, r2, h, w]
        return [factors[1], core.contiguous(), factors[0].T.contiguous()]


class MTK(TK):
    name = "mtk"
    reshaped = True
    description = "reshaped Tucker (TNN-mTK): Si x a_i, Ti x c_i and a core over all ranks and kh x kw"

    def terms(self, tz):
        m = tz.m
        return ([(f"s{i + 1}", f"a{i + 1}") for i in range(m)] + [(f"t{i + 1}", f"c{i + 1}") for i in range(m)]
                + [tuple(f"a{i + 1}" for i in range(m)) + tuple(f"c{i + 1}" for i in range(m)) + ("h", "w")])

    def rank_names(self, tz):
        return [f"a{i + 1}" for i in range(tz.m)] + [f"c{i + 1}" for i in range(tz.m)]

    def _rank_modes(self, shape, tz):
        return ({f"a{i + 1}": n for i, n in enumerate(tz.in_modes)}
                | {f"c{i + 1}": n for i, n in enumerate(tz.out_modes)})

    def initialise_group(self, kernel, tz, ranks, seed, dec):
        m, (_, _, kh, kw) = tz.m, kernel.shape
        k = kernel.reshape(*tz.out_modes, *tz.in_modes, kh, kw)
        modes = {i: ranks[f"c{i + 1}"] for i in range(m)} | {m + i: ranks[f"a{i + 1}"] for i in range(m)}
        core, factors = dec.tucker(k, modes, seed)
        core = core.permute(*range(m, 2 * m), *range(m), 2 * m, 2 * m + 1)  # a.. c.. h w
        return [factors[m + i] for i in range(m)] + [factors[i] for i in range(m)] + [core.contiguous()]


register_format(TK())
register_format(MTK())
