"""Tensor-train decomposition by TT-SVD (Oseledets 2011): sequential truncated SVDs, left to right.
Optimal to within sqrt(d-1) of the best TT approximation with these ranks; exact at full TT ranks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .linalg import relative_error


@dataclass
class TTResult:
    cores: list[torch.Tensor]  # core k has shape [R_{k-1}, I_k, R_k], R_0 = R_d = 1
    rel_error: float


def tt_rebuild(cores: list[torch.Tensor]) -> torch.Tensor:
    out = cores[0]
    for core in cores[1:]:
        out = torch.tensordot(out, core, dims=([-1], [0]))
    return out.squeeze(0).squeeze(-1)


def max_tt_ranks(shape: tuple[int, ...]) -> list[int]:
    """The largest useful bond ranks: min(product of the sizes left of the bond, product right of it)."""
    ranks = []
    for k in range(1, len(shape)):
        left = right = 1
        for d in shape[:k]:
            left *= d
        for d in shape[k:]:
            right *= d
        ranks.append(min(left, right))
    return ranks


def tt_svd(tensor: torch.Tensor, ranks: list[int]) -> TTResult:
    """ranks: the d-1 bond ranks; each is capped at its largest useful value."""
    shape = tuple(tensor.shape)
    if len(ranks) != len(shape) - 1:
        raise ValueError(f"a {len(shape)}-way tensor train has {len(shape) - 1} bond ranks, got {len(ranks)}")
    caps = max_tt_ranks(shape)
    cores, rest, r_prev = [], tensor.reshape(1, -1), 1
    for k, (r, cap) in enumerate(zip(ranks, caps, strict=True)):
        r = min(r, cap)
        matrix = rest.reshape(r_prev * shape[k], -1)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        r = min(r, s.shape[0])
        cores.append(u[:, :r].reshape(r_prev, shape[k], r))
        rest = s[:r, None] * vh[:r]
        r_prev = r
    cores.append(rest.reshape(r_prev, shape[-1], 1))
    return TTResult(cores, relative_error(tt_rebuild(cores), tensor))
