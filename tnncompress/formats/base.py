"""What a tensorial format is, and the registry of formats.

A format is defined in one place (its module) by:
  * `terms`: the modes of each factor, as names. Channel modes are "t"/"s" (or "t1".."tm" and
    "s1".."sm" for reshaped formats), the filter modes "h" and "w", the rest are ranks;
  * `rank_names` and `ranks_for_budget`: the documented rule that picks ranks for a parameter budget;
  * `initialise`: Layer-Decomp, the factors from a dense kernel.
Everything else is derived here, identically for every format: factor shapes, parameter count, the
conv_einsum layer expression, the dense rebuild, grouped convolutions (the group is a batch mode "g" of
every factor), and FLOPs (from conv_einsum's plan).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import reduce
from operator import mul

import torch

from ..decompose import Decomposer, get_decomposer
from ..einsum import contract_expression, conv_einsum
from ..registry import Registry
from .tensorize import Tensorization

Ranks = dict[str, int]


@dataclass(frozen=True)
class KernelShape:
    """A conv kernel [out_channels, in_channels / groups, kh, kw]; a linear layer has kh = kw = 1."""

    out_channels: int
    in_channels: int  # per group, as in the kernel
    kh: int
    kw: int
    groups: int = 1

    @property
    def t(self) -> int:  # output channels per group
        return self.out_channels // self.groups

    @property
    def numel(self) -> int:
        return self.out_channels * self.in_channels * self.kh * self.kw


def _term(modes) -> str:
    return "".join(m if len(m) == 1 else f"({m})" for m in modes)


def _prod(values) -> int:
    return reduce(mul, values, 1)


class Format(ABC):
    name: str = ""
    reshaped: bool = False
    description: str = ""

    # --- what each format defines ----------------------------------------------------------------------

    @abstractmethod
    def terms(self, tz: Tensorization | None) -> list[tuple[str, ...]]:
        """The modes of each factor (per group)."""

    @abstractmethod
    def rank_names(self, tz: Tensorization | None) -> list[str]:
        ...

    @abstractmethod
    def ranks_for_budget(self, shape: KernelShape, tz: Tensorization | None, budget: int) -> Ranks | None:
        """The largest ranks (by the format's rule) whose factors fit in `budget` parameters; None when
        even the smallest ranks do not."""

    @abstractmethod
    def initialise_group(self, kernel: torch.Tensor, tz: Tensorization | None, ranks: Ranks, seed: int,
                         dec: Decomposer) -> list[torch.Tensor]:
        """Layer-Decomp of one group's kernel [T, S, kh, kw] (float64) by the decompositions of `dec`:
        the factors, in `terms` order."""

    def rank_caps(self, shape: KernelShape, tz: Tensorization | None) -> dict[str, int]:
        """Ranks beyond which a factor gains nothing (none by default)."""
        return {}

    def effective_ranks(self, shape: KernelShape, tz, ranks: Ranks) -> Ranks:
        """The ranks the decomposition can actually have: each capped at its useful maximum (a format
        whose ranks bound one another, such as a train, tightens this)."""
        caps = self.rank_caps(shape, tz)
        return {name: min(r, caps.get(name, r)) for name, r in ranks.items()}

    # --- derived, the same for every format -------------------------------------------------------------

    def normalise_ranks(self, shape: KernelShape, tz, ranks: Ranks) -> Ranks:
        """Check the rank names and values; cap each rank at its useful maximum."""
        names = self.rank_names(tz)
        if set(ranks) != set(names):
            raise ValueError(f"format {self.name} needs ranks {names}, got {sorted(ranks)}")
        for name in names:
            r = ranks[name]
            if not isinstance(r, int) or isinstance(r, bool) or r < 1:
                raise ValueError(f"rank {name} must be a positive integer, got {r!r}")
        return self.effective_ranks(shape, tz, {name: ranks[name] for name in names})

    def fill_budget(self, shape: KernelShape, tz, ranks: Ranks, budget: int, cost_of=None, step: int = 1) -> Ranks:
        """Spend what the format's rule left of `budget`: raise one rank at a time to the next multiple
        of `step` (by one, by default; the smallest rank first, the cheapest on ties) while the cost still
        fits and the rank is below its cap. The cost is the factors' parameter count unless
        `cost_of(ranks)` says otherwise (FLOPs, for a FLOP target). Single-rank formats are unchanged by a
        parameter budget: their rule already takes the largest rank that fits."""
        cost_of = cost_of or (lambda r: self.params(shape, tz, r))
        ranks = dict(ranks)
        while True:
            best = None
            for name, r in ranks.items():
                trial = {**ranks, name: (r // step + 1) * step}
                if self.effective_ranks(shape, tz, trial) != trial:  # at its cap: no gain
                    continue
                cost = cost_of(trial)
                if cost <= budget and (best is None or (r, cost) < best[0]):
                    best = ((r, cost), trial)
            if best is None:
                return ranks
            ranks = best[1]

    def channel_modes(self, tz: Tensorization | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if not self.reshaped:
            return ("t",), ("s",)
        return tuple(f"t{i + 1}" for i in range(tz.m)), tuple(f"s{i + 1}" for i in range(tz.m))

    def sizes(self, shape: KernelShape, tz: Tensorization | None, ranks: Ranks) -> dict[str, int]:
        out_modes, in_modes = self.channel_modes(tz)
        sizes = {"h": shape.kh, "w": shape.kw, "g": shape.groups, **ranks}
        if self.reshaped:
            sizes.update(zip(out_modes, tz.out_modes, strict=True))
            sizes.update(zip(in_modes, tz.in_modes, strict=True))
        else:
            sizes.update(t=shape.t, s=shape.in_channels)
        return sizes

    def grouped_terms(self, shape: KernelShape, tz) -> list[tuple[str, ...]]:
        return [("g", *t) if shape.groups > 1 else t for t in self.terms(tz)]

    def factor_shapes(self, shape: KernelShape, tz, ranks: Ranks) -> list[tuple[int, ...]]:
        sizes = self.sizes(shape, tz, ranks)
        return [tuple(sizes[m] for m in term) for term in self.grouped_terms(shape, tz)]

    def params(self, shape: KernelShape, tz, ranks: Ranks) -> int:
        return sum(_prod(s) for s in self.factor_shapes(shape, tz, ranks))

    def expression(self, shape: KernelShape, tz) -> str:
        """The layer's conv_einsum expression; the input is [b, (g,) s-modes, h, w]."""
        out_modes, in_modes = self.channel_modes(tz)
        g = ("g",) if shape.groups > 1 else ()
        weights = ",".join(_term(t) for t in self.grouped_terms(shape, tz))
        return (f"{_term(('b', *g, *in_modes, 'h', 'w'))},{weights}->{_term(('b', *g, *out_modes, 'h', 'w'))}"
                "|hw")

    def kernel_expression(self, shape: KernelShape, tz) -> str:
        out_modes, in_modes = self.channel_modes(tz)
        g = ("g",) if shape.groups > 1 else ()
        weights = ",".join(_term(t) for t in self.grouped_terms(shape, tz))
        return f"{weights}->{_term((*g, *out_modes, *in_modes, 'h', 'w'))}|hw"

    def rebuild(self, factors: list[torch.Tensor], shape: KernelShape, tz) -> torch.Tensor:
        """The dense kernel [out_channels, in_channels / groups, kh, kw] the factors represent."""
        kernel = conv_einsum(self.kernel_expression(shape, tz), *factors, weights_only=True)
        return kernel.reshape(shape.out_channels, shape.in_channels, shape.kh, shape.kw)

    def initialise(self, kernel: torch.Tensor, shape: KernelShape, tz, ranks: Ranks, seed: int = 0,
                   decomposer: str = "native") -> list[torch.Tensor]:
        """Layer-Decomp of a whole (possibly grouped) kernel, in float64; factors in `terms` order."""
        kernel = kernel.detach().to(torch.float64)
        groups = kernel.reshape(shape.groups, shape.t, shape.in_channels, shape.kh, shape.kw)
        dec = get_decomposer(decomposer)
        per_group = [self.initialise_group(groups[i], tz, ranks, seed, dec) for i in range(shape.groups)]
        if shape.groups == 1:
            factors = per_group[0]
        else:
            factors = [torch.stack(fs) for fs in zip(*per_group, strict=True)]
        expected = self.factor_shapes(shape, tz, ranks)
        for f, e in zip(factors, expected, strict=True):
            if tuple(f.shape) != e:
                raise AssertionError(f"{self.name}: initialisation produced {tuple(f.shape)}, expected {e}")
        return [f.contiguous() for f in factors]

    def flops(self, shape: KernelShape, tz, ranks: Ranks, input_hw: tuple[int, int], stride=1, padding=0,
              dilation=1) -> int:
        """FLOPs per sample of the layer's conv_einsum plan at this input size."""
        out_modes, in_modes = self.channel_modes(tz)
        sizes = self.sizes(shape, tz, ranks)
        g = (shape.groups,) if shape.groups > 1 else ()
        x_shape = (1, *g, *(sizes[m] for m in in_modes), *input_hw)
        expr = contract_expression(self.expression(shape, tz), x_shape, *self.factor_shapes(shape, tz, ranks),
                                   stride=stride, padding=padding, dilation=dilation)
        return expr.flops


_ORDER = ("svd", "cp", "tk", "tt", "tr")
# plain formats first, then the reshaped ones, each in the order svd, cp, tk, tt, tr
FORMATS: Registry[Format] = Registry("format", order=lambda n, f: (
    f.reshaped, _ORDER.index(n.removeprefix("m")) if n.removeprefix("m") in _ORDER else len(_ORDER), n))


def register_format(fmt: Format) -> Format:
    return FORMATS.add(fmt.name, fmt)


def get_format(name: str) -> Format:
    return FORMATS.get(name)


def list_formats() -> list[str]:
    return FORMATS.names()


def largest(candidates, params_of, budget: int):
    """The last candidate (in increasing order) whose parameter count fits the budget, or None."""
    best = None
    for cand in candidates:
        if params_of(cand) <= budget:
            best = cand
        else:
            break
    return best
