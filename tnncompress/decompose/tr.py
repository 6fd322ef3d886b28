"""Tensor-ring decomposition by alternating least squares (Zhao et al. 2016, TR-ALS).

Initialised from TT-SVD (a tensor train is a ring whose closing bond has rank 1): the cores are
embedded into the ring ranks with small noise on the new entries, so ALS starts from the TT error and
only improves on it. Each sweep solves for one core with the others fixed, by least squares on the
subchain Q of the other cores, through the normal equations: the Gram matrix Q^T Q is chained from the
cores' own Gram tensors and X Q is contracted core by core, so Q (as many rows as the tensor has
entries divided by one mode) is never formed. For a 512 x 3 x 3 x 512 kernel that is the difference
between a 786k x R^2 least-squares problem per kh/kw core update and a few small contractions.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import torch
from opt_einsum import contract

from .linalg import relative_error, split_modes
from .tt import tt_svd


@dataclass
class TRResult:
    cores: list[torch.Tensor]  # core k has shape [R_k, I_k, R_{k+1}], R_d = R_0 (the ring closes)
    rel_error: float
    iterations: int


RESTART_BELOW, ALWAYS_RESTART = 0.5, 4096


def tr_rebuild(cores: list[torch.Tensor]) -> torch.Tensor:
    d = len(cores)
    modes, bonds = string.ascii_lowercase[:d], string.ascii_uppercase[:d]
    terms = [f"{bonds[j]}{modes[j]}{bonds[(j + 1) % d]}" for j in range(d)]  # the ring closes on bond 0
    return contract(f"{','.join(terms)}->{modes}", *cores, backend="torch")


def _gram(cores: list[torch.Tensor], k: int) -> torch.Tensor:
    """G = Q^T Q [(R_k R_(k+1)), (R_k R_(k+1))] of the subchain Q[b, m, a] of the cores other than k
    (b = R_(k+1), a = R_k; columns ordered (a, b)), chained from the cores' own Gram tensors."""
    d = len(cores)
    order = [(k + j) % d for j in range(1, d)]
    first = cores[order[0]]
    gram = torch.einsum("piq,rit->prqt", first, first)  # [b, b', q, q']
    for j in order[1:]:
        gram = contract("prqt,qiu,tiv->pruv", gram, cores[j], cores[j], backend="torch")
    r_next, r_k = gram.shape[0], gram.shape[2]
    return gram.permute(2, 0, 3, 1).reshape(r_k * r_next, r_k * r_next)


def _chain(cores: list[torch.Tensor]) -> torch.Tensor:
    """The cores of a segment of the ring multiplied out: [R_first, product of their modes, R_after_last]."""
    chain = cores[0]
    for core in cores[1:]:
        chain = torch.einsum("aib,bjc->aijc", chain, core).reshape(chain.shape[0], -1, core.shape[2])
    return chain


def _normal_equations(tensor: torch.Tensor, cores: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For core k: the Gram matrix G = Q^T Q and B = X_(k) Q [I_k, R_k R_(k+1)], X Q in one contraction.
    (The definition of B: a sweep over two or more modes takes it from `_HalfContractions` instead.)"""
    d = len(cores)
    order = [(k + j) % d for j in range(1, d)]
    modes, bonds = string.ascii_lowercase[:d], string.ascii_uppercase[:d]  # bond j joins cores j-1 and j
    terms = [f"{bonds[j]}{modes[j]}{bonds[(j + 1) % d]}" for j in order]
    y = contract(f"{modes},{','.join(terms)}->{modes[k]}{bonds[(k + 1) % d]}{bonds[k]}", tensor,
                 *(cores[j] for j in order), backend="torch")
    return _gram(cores, k), y.permute(0, 2, 1).reshape(tensor.shape[k], -1)


def _residual(norm2: float, gram: torch.Tensor, rhs: torch.Tensor, sol: torch.Tensor) -> float:
    """||X - X~|| / ||X|| right after core k was set to `sol` = G_k(2), from its normal equations alone:
    ||X - X~||^2 = ||X||^2 - 2 <X, X~> + ||X~||^2 with <X, X~> = <B, G_k(2)> and ||X~||^2 = <G_k(2) Q^T Q,
    G_k(2)> (no rebuild of the tensor)."""
    fit2 = norm2 - 2 * float((rhs * sol).sum()) + float(((sol @ gram) * sol).sum())
    return math.sqrt(max(fit2, 0.0) / norm2)


class _HalfContractions:
    """B = X_(k) Q for every core k of a sweep from two products with the tensor, not d: the modes are
    split into two contiguous segments of the ring, [0, h) and [h, d). While the cores of one segment are
    updated, the other segment's cores are fixed, so X contracted with the other segment's chain (one
    matrix product, the tensor as a [first segment] x [second segment] matrix) serves every core of the
    segment; each core's B then contracts that much smaller tensor with the rest of its own segment. The
    same least-squares steps as contracting X with the d - 1 other cores for each core, in the same order."""

    def __init__(self, tensor: torch.Tensor):
        self.shape, d = tuple(tensor.shape), tensor.ndim
        self.split = split_modes(self.shape)
        self.matrix = tensor.reshape(math.prod(self.shape[:self.split]), -1)
        self.segments = (range(0, self.split), range(self.split, d))

    def start(self, cores: list[torch.Tensor], segment: int) -> None:
        """X contracted with the chain of the other segment's cores: [modes of `segment`, R_start, R_end]
        (R_start, R_end the bonds at its first core's left and past its last core)."""
        mine, other = self.segments[segment], self.segments[1 - segment]
        chain = _chain([cores[j] for j in other])  # [R_end, I_other, R_start]
        matrix = self.matrix if segment == 0 else self.matrix.T
        half = matrix @ chain.permute(1, 2, 0).reshape(chain.shape[1], -1)  # [(I_mine), (R_start R_end)]
        self.mine = mine
        self.half = half.reshape(*(self.shape[j] for j in mine), chain.shape[2], chain.shape[0])

    def rhs(self, cores: list[torch.Tensor], k: int) -> torch.Tensor:
        d, mine = len(cores), self.mine
        modes, bonds = string.ascii_lowercase[:d], string.ascii_uppercase[:d]  # bond j joins cores j-1 and j
        first, end = mine[0], (mine[-1] + 1) % d
        half = "".join(modes[j] for j in mine) + bonds[first] + bonds[end]
        terms = [f"{bonds[j]}{modes[j]}{bonds[(j + 1) % d]}" for j in mine if j != k]
        y = contract(",".join([half, *terms]) + f"->{modes[k]}{bonds[(k + 1) % d]}{bonds[k]}", self.half,
                     *(cores[j] for j in mine if j != k), backend="torch")
        return y.permute(0, 2, 1).reshape(self.shape[k], -1)


def tr_als(tensor: torch.Tensor, ranks: list[int], max_iter: int = 100, tol: float = 1e-5,
           seed: int = 0, init_noise: float = 0.1, restarts: int = 4) -> TRResult:
    """ranks: the d ring ranks [R_0, ..., R_{d-1}] (core k is [R_k, I_k, R_{k+1 mod d}]).

    TR-ALS can stall in a local minimum short of an exact fit, so up to `restarts` starts (the TT-SVD
    cores with growing noise) are run and the best kept; an exact fit (error < 1e-9) ends the search.
    A large tensor (over `ALWAYS_RESTART` entries) whose fit is poor (error above `RESTART_BELOW`: a
    real kernel at a compressing rank) is not restarted: there restarts moved the error by well under
    1% for 4x the time. Each start stops after `max_iter` sweeps, or when the error changes by less than
    `tol` relative to itself (CP-ALS's and HOOI's rule: on random kernels the last sweeps of 100 moved
    the error by about 1e-5 each), or reaches 1e-13."""
    best = None
    for k in range(max(1, restarts)):
        result = _tr_als_once(tensor, ranks, max_iter, tol, seed + k, init_noise * (1 + 2 * k))
        if best is None or result.rel_error < best.rel_error:
            best = result
        if best.rel_error < 1e-9 or (tensor.numel() > ALWAYS_RESTART and best.rel_error > RESTART_BELOW):
            break
    return best


def _tr_als_once(tensor, ranks, max_iter, tol, seed, init_noise) -> TRResult:
    d = tensor.ndim
    if len(ranks) != d:
        raise ValueError(f"a {d}-way tensor ring has {d} ranks, got {len(ranks)}")
    g = torch.Generator().manual_seed(seed)
    tt = tt_svd(tensor, ranks[1:])
    cores = []
    scale = init_noise * max(float(c.abs().mean()) for c in tt.cores)
    for k, core in enumerate(tt.cores):
        r_in, r_out = ranks[k], ranks[(k + 1) % d]
        full = torch.randn(r_in, tensor.shape[k], r_out, generator=g, dtype=tensor.dtype).to(tensor.device) * scale
        full[: core.shape[0], :, : core.shape[2]] += core
        cores.append(full)
    norm2 = float(torch.linalg.vector_norm(tensor)) ** 2
    exact_below = 1e4 * math.sqrt(torch.finfo(tensor.dtype).eps)  # as CP-ALS's
    halves = _HalfContractions(tensor) if d > 1 else None
    previous, it = None, 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is reported)
        for segment in range(2) if halves else [None]:
            if halves:
                halves.start(cores, segment)
            for k in halves.mine if halves else range(d):
                # X_(k) [I_k, M] ~ G_k(2) [I_k, R_k R_(k+1)] @ Q(2)^T: G_k(2) = X_(k) Q (Q^T Q)^+
                gram, rhs = ((_gram(cores, k), halves.rhs(cores, k)) if halves
                             else _normal_equations(tensor, cores, k))
                sol = rhs @ torch.linalg.pinv(gram, hermitian=True)
                r_k, r_next = cores[k].shape[0], cores[k].shape[2]
                cores[k] = sol.reshape(tensor.shape[k], r_k, r_next).permute(1, 0, 2)
        residual = _residual(norm2, gram, rhs, sol)
        if residual < exact_below:  # near an exact fit the expansion cancels: rebuild there
            residual = float(torch.linalg.vector_norm(tr_rebuild(cores) - tensor)) / math.sqrt(norm2)
        if residual < 1e-13 or (previous is not None and abs(previous - residual) < tol * residual):
            break
        previous = residual
    return TRResult(cores, relative_error(tr_rebuild(cores), tensor), it)
