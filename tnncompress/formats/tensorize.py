"""Tensorization: how a channel count is split into m modes for the reshaped ("m") formats.

Both channel counts are split into the same number of modes, as balanced as the integers allow
(the smallest spread of log-sizes). When a count has fewer than m prime factors, fewer modes are used
for both, and the layer records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from math import log


@dataclass(frozen=True)
class Tensorization:
    out_modes: tuple[int, ...]  # T_1..T_m (per group)
    in_modes: tuple[int, ...]  # S_1..S_m

    @property
    def m(self) -> int:
        return len(self.out_modes)

    def to_dict(self) -> dict:
        return {"out_modes": list(self.out_modes), "in_modes": list(self.in_modes)}


def prime_factor_count(n: int) -> int:
    count, p = 0, 2
    while p * p <= n:
        while n % p == 0:
            n //= p
            count += 1
        p += 1
    return count + (n > 1)


@cache
def balanced_factors(n: int, m: int) -> tuple[int, ...]:
    """n as a product of m integers >= 1, most balanced first (sorted in decreasing order)."""
    if m == 1:
        return (n,)
    best, best_key = None, None

    def search(rest: int, parts: list[int], k: int):
        nonlocal best, best_key
        if k == 1:
            cand = tuple(sorted(parts + [rest], reverse=True))
            key = max(cand) / min(cand), sum(abs(log(c) - log(n) / m) for c in cand)
            if best_key is None or key < best_key:
                best, best_key = cand, key
            return
        low = parts[-1] if parts else 1
        d = low
        while d ** k <= rest:
            if rest % d == 0:
                search(rest // d, parts + [d], k - 1)
            d += 1

    search(n, [], m)
    return best


def tensorize(out_channels: int, in_channels: int, m: int = 3) -> Tensorization:
    modes = max(1, min(m, prime_factor_count(out_channels), prime_factor_count(in_channels)))
    return Tensorization(balanced_factors(out_channels, modes), balanced_factors(in_channels, modes))


def interleave(kernel, tz: Tensorization, first: str = "t"):
    """A kernel [T, S, kh, kw] as the (m+1)-way tensor the reshaped formats decompose: one mode per
    channel pair, (T_i S_i) (or (S_i T_i) with `first="s"`), then the filter (kh kw)."""
    m, (_, _, kh, kw) = tz.m, kernel.shape
    k = kernel.reshape(*tz.out_modes, *tz.in_modes, kh, kw)
    pairs = [(i, m + i) if first == "t" else (m + i, i) for i in range(m)]
    order = [d for pair in pairs for d in pair] + [2 * m, 2 * m + 1]
    return k.permute(order).reshape(*(t * s for t, s in zip(tz.out_modes, tz.in_modes, strict=True)), kh * kw)
