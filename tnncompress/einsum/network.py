"""The tensor network of one conv_einsum call: what every intermediate holds and what each pairwise
step costs.

An intermediate is identified by the set of operands merged into it; its modes and sizes do not depend
on the order of the merges, which is what lets a dynamic-programming search over subsets be exact.
Along a convolution mode, an intermediate that holds the input has been cross-correlated with the
weights it holds: padded when the first of them arrived, strided when the last one did. An intermediate
of weights only holds their full convolution.
"""

from __future__ import annotations

from functools import lru_cache, reduce
from operator import mul

from .geometry import Geometry
from .parser import Expression

Subset = frozenset


def _prod(values) -> int:
    return reduce(mul, values, 1)


class Network:
    def __init__(self, expr: Expression, sizes: list[dict[str, int]], geometry: Geometry, weights_only: bool):
        self.expr = expr
        self.sizes = sizes
        self.geometry = geometry
        self.n = len(expr.inputs)
        self.signal = None if weights_only else 0
        self.conv = expr.conv
        self.weights_with = {c: frozenset(i for i in range(self.n) if i != self.signal and c in sizes[i])
                             for c in self.conv}
        self.common = {m: d for s in sizes for m, d in s.items() if m not in self.conv}
        self.legs = lru_cache(maxsize=None)(self._legs)
        self.size = lru_cache(maxsize=None)(self._size)

    # --- what an intermediate holds ---------------------------------------------------------------------

    def _legs(self, subset: Subset) -> frozenset[str]:
        inside = frozenset(m for i in subset for m in self.expr.inputs[i])
        outside = frozenset(m for i in range(self.n) if i not in subset for m in self.expr.inputs[i])
        return inside & (outside | frozenset(self.expr.output))

    def has_signal(self, subset: Subset) -> bool:
        return self.signal is not None and self.signal in subset

    def signal_base_length(self, mode: str) -> int:
        """Length of the input along `mode` before any weight arrives (padding and stride along modes
        that no weight has are applied to the input up front, as by a filter of length 1)."""
        length = self.sizes[self.signal][mode]
        if self.weights_with[mode]:
            return length
        before, after = self.geometry.pad[mode]
        return (length + before + after - 1) // self.geometry.stride[mode] + 1

    def _size(self, subset: Subset, mode: str) -> int:
        if mode not in self.conv:
            return self.common[mode]
        weights = [i for i in subset if i != self.signal and mode in self.sizes[i]]
        kernel = sum(self.sizes[i][mode] for i in weights) - len(weights) + 1
        if not self.has_signal(subset):
            return kernel
        if not weights:
            return self.signal_base_length(mode)
        before, after = self.geometry.pad[mode]
        length = self.sizes[self.signal][mode] + before + after - self.geometry.dilation[mode] * (kernel - 1)
        if self.weights_with[mode] <= subset:  # the last weight along this mode: the stride applies here
            length = (length - 1) // self.geometry.stride[mode] + 1
        return length

    def numel(self, subset: Subset) -> int:
        return _prod(self.size(subset, m) for m in self.legs(subset))

    # --- what a step costs --------------------------------------------------------------------------------

    def step_flops(self, a: Subset, b: Subset) -> int:
        """Forward FLOPs (2 per multiply-accumulate) of merging intermediates a and b."""
        if self.has_signal(b):
            a, b = b, a
        la, lb = self.legs(a), self.legs(b)
        merged = a | b
        plain = _prod(self.common[m] for m in (la | lb) if m not in self.conv)
        spatial = 1
        for c in self.conv:
            in_a, in_b = c in la, c in lb
            if in_a and in_b:
                kernel = self.size(b, c) if self.has_signal(a) else min(self.size(a, c), self.size(b, c))
                spatial *= self.size(merged, c) * kernel
            elif in_a or in_b:
                spatial *= self.size(a if in_a else b, c)
        return 2 * plain * spatial

    def needs_grad(self, subset: Subset, input_grad: bool) -> bool:
        return any(i != self.signal for i in subset) or input_grad

    def step_cost(self, a: Subset, b: Subset, backward: bool, input_grad: bool = True) -> int:
        """Cost used by the planner: forward FLOPs, plus with `backward` one more forward's worth for each
        operand that needs a gradient (for a contraction or a convolution, each gradient is itself a
        contraction or convolution with the same number of multiply-accumulates)."""
        flops = self.step_flops(a, b)
        if backward:
            flops *= 1 + self.needs_grad(a, input_grad) + self.needs_grad(b, input_grad)
        return flops
