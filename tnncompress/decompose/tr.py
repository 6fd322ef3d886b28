"""Tensor-ring decomposition by alternating least squares (Zhao et al. 2016, TR-ALS).

Initialised from TT-SVD (a tensor train is a ring whose closing bond has rank 1): the cores are
embedded into the ring ranks with small noise on the new entries, so ALS starts from the TT error and
only improves on it. Each sweep solves for one core with the others fixed, by least squares on the
subchain of the other cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .linalg import relative_error
from .tt import tt_svd


@dataclass
class TRResult:
    cores: list[torch.Tensor]  # core k has shape [R_k, I_k, R_{k+1}], R_d = R_0 (the ring closes)
    rel_error: float
    iterations: int


def tr_rebuild(cores: list[torch.Tensor]) -> torch.Tensor:
    out = cores[0]
    for core in cores[1:]:
        out = torch.tensordot(out, core, dims=([-1], [0]))
    return out.diagonal(dim1=0, dim2=-1).sum(-1)  # trace over the closing bond


def _subchain(cores: list[torch.Tensor], k: int) -> torch.Tensor:
    """Product of the cores after k, cyclically, up to k-1: shape [R_{k+1}, prod(other sizes), R_k]."""
    d = len(cores)
    order = [(k + j) % d for j in range(1, d)]
    out = cores[order[0]]
    for j in order[1:]:
        out = torch.tensordot(out, cores[j], dims=([-1], [0]))
    return out.reshape(out.shape[0], -1, out.shape[-1])


def tr_als(tensor: torch.Tensor, ranks: list[int], max_iter: int = 100, tol: float = 1e-10,
           seed: int = 0, init_noise: float = 0.1, restarts: int = 4) -> TRResult:
    """ranks: the d ring ranks [R_0, ..., R_{d-1}] (core k is [R_k, I_k, R_{k+1 mod d}]).

    TR-ALS can stall in a local minimum, so up to `restarts` starts (the TT-SVD cores with growing
    noise) are run and the best kept; an exact fit (error < 1e-9) ends the search early."""
    best = None
    for k in range(max(1, restarts)):
        result = _tr_als_once(tensor, ranks, max_iter, tol, seed + k, init_noise * (1 + 2 * k))
        if best is None or result.rel_error < best.rel_error:
            best = result
        if best.rel_error < 1e-9:
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
    norm = torch.linalg.vector_norm(tensor)
    previous, it = None, 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is reported)
        for k in range(d):
            q = _subchain(cores, k)  # [R_{k+1}, M, R_k]
            # X_(k) [I_k, M] ~ G_k(2) [I_k, R_k R_{k+1}] @ Q(2)^T, with Q(2) [M, R_k R_{k+1}]
            perm = [k] + [(k + j) % d for j in range(1, d)]
            x_k = tensor.permute(perm).reshape(tensor.shape[k], -1)
            q2 = q.permute(1, 2, 0).reshape(q.shape[1], -1)  # [M, R_k * R_{k+1}]
            sol = torch.linalg.lstsq(q2, x_k.T).solution if q2.device.type == "cpu" else \
                torch.linalg.pinv(q2) @ x_k.T
            cores[k] = sol.T.reshape(tensor.shape[k], q.shape[2], q.shape[0]).permute(1, 0, 2)
        residual = float(torch.linalg.vector_norm(tr_rebuild(cores) - tensor) / norm)
        if previous is not None and abs(previous - residual) < tol:
            break
        previous = residual
    return TRResult(cores, relative_error(tr_rebuild(cores), tensor), it)
