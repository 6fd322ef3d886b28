"""CP decomposition by alternating least squares (Kolda and Bader 2009, section 3.4).

Initialised from the leading singular vectors of each unfolding (random columns beyond the mode size),
then ALS sweeps until the relative change of the error drops below `tol`.

Each sweep costs two matrix products with the tensor, not one per mode (a dimension tree: Phan, Tichavsky
and Cichocki 2013): the modes are split in two halves of similar size; the tensor, as a matrix (first
half x second half), times the Khatri-Rao product of the second half's factors gives every first-half
mode's MTTKRP after a contraction with the other first-half factors, which are small; then the same
from the other side with the updated first half. The update order, and so the algorithm, is standard ALS.
The normal equations are solved by Cholesky (a pseudo-inverse only when the Gram matrix is singular),
and the error comes from the Gram matrices and the last MTTKRP at no extra cost, except near an exact fit,
where that expansion loses its digits to cancellation and the tensor is rebuilt instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .linalg import leading_singular_vectors, letters, relative_error, split_modes, unfold


@dataclass
class CPResult:
    factors: list[torch.Tensor]  # factor n has shape [I_n, R]; the weights are absorbed into factor 0
    rel_error: float
    iterations: int


def cp_rebuild(factors: list[torch.Tensor]) -> torch.Tensor:
    idx = letters(len(factors))
    return torch.einsum(",".join(f"{c}z" for c in idx) + "->" + idx, *factors)


def khatri_rao(factors: list[torch.Tensor]) -> torch.Tensor:
    """[prod I_j, R]: row (i_1, ..., i_p) in row-major order holds prod_j factors[j][i_j, :]."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
    return out


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """rhs @ gram^-1 for a symmetric positive semi-definite `gram` (the pseudo-inverse when singular)."""
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        return torch.cholesky_solve(rhs.T, chol).T
    return rhs @ torch.linalg.pinv(gram, hermitian=True)


def cp_als(tensor: torch.Tensor, rank: int, max_iter: int = 100, tol: float = 1e-5, seed: int = 0) -> CPResult:
    """Stops after `max_iter` sweeps, or when the error changes by less than `tol` relative to itself
    (so an exactly low-rank tensor is fitted to machine precision), or reaches 1e-13."""
    g = torch.Generator().manual_seed(seed)
    n, shape = tensor.ndim, tuple(tensor.shape)
    factors = [leading_singular_vectors(unfold(tensor, k), rank, g) for k in range(n)]
    if n == 1:
        return CPResult(factors, relative_error(cp_rebuild(factors), tensor), 0)
    grams = [f.T @ f for f in factors]
    split = split_modes(shape)
    matrix = tensor.reshape(math.prod(shape[:split]), -1)
    halves = ((range(0, split), range(split, n), matrix), (range(split, n), range(0, split), matrix.T))
    norm2 = float(torch.linalg.vector_norm(tensor)) ** 2
    # below this the expansion's cancellation error is no longer small against `tol` times the error
    exact_below = 1e4 * math.sqrt(torch.finfo(tensor.dtype).eps)
    idx = letters(n)
    previous = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is reported)
        for mine, theirs, rows in halves:
            partial = (rows @ khatri_rao([factors[j] for j in theirs])).reshape(*(shape[j] for j in mine), rank)
            for k in mine:
                others = [j for j in mine if j != k]
                eq = "".join(idx[j] for j in mine) + "z," + ",".join(f"{idx[j]}z" for j in others) + f"->{idx[k]}z"
                mttkrp = torch.einsum(eq, partial, *(factors[j] for j in others)) if others else partial
                gram = torch.ones(rank, rank, dtype=tensor.dtype, device=tensor.device)
                for j in range(n):
                    if j != k:
                        gram = gram * grams[j]
                factors[k] = _solve(gram, mttkrp)
                grams[k] = factors[k].T @ factors[k]
        # ||X - [[A]]||^2 = ||X||^2 - 2 <X, [[A]]> + ||[[A]]||^2; the inner product is the last MTTKRP's
        model2 = float(torch.stack(grams).prod(dim=0).sum())
        residual = math.sqrt(max(norm2 - 2 * float((mttkrp * factors[k]).sum()) + model2, 0.0) / norm2)
        if residual < exact_below:
            residual = float(torch.linalg.vector_norm(cp_rebuild(factors) - tensor)) / math.sqrt(norm2)
        if residual < 1e-13 or (previous is not None and abs(previous - residual) < tol * residual):
            break
        previous = residual
    # normalise columns of all but the first factor; their scale goes into factor 0
    for k in range(1, n):
        scale = torch.linalg.vector_norm(factors[k], dim=0).clamp_min(1e-300)
        factors[k] = factors[k] / scale
        factors[0] = factors[0] * scale
    return CPResult(factors, relative_error(cp_rebuild(factors), tensor), it)
