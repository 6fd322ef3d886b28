"""CP decomposition by alternating least squares (Kolda and Bader 2009, section 3.4).

Initialised from the leading singular vectors of each unfolding (random columns beyond the mode size),
then ALS sweeps until the relative change of the error drops below `tol`. The matricised-tensor times
Khatri-Rao product is one einsum, so the Khatri-Rao matrix is never formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .linalg import leading_singular_vectors, letters, relative_error, unfold


@dataclass
class CPResult:
    factors: list[torch.Tensor]  # factor n has shape [I_n, R]; the weights are absorbed into factor 0
    rel_error: float
    iterations: int


def cp_rebuild(factors: list[torch.Tensor]) -> torch.Tensor:
    idx = letters(len(factors))
    return torch.einsum(",".join(f"{c}z" for c in idx) + "->" + idx, *factors)


def cp_als(tensor: torch.Tensor, rank: int, max_iter: int = 100, tol: float = 1e-5, seed: int = 0) -> CPResult:
    """Stops after `max_iter` sweeps, or when the error changes by less than `tol` relative to itself
    (so an exactly low-rank tensor is fitted to machine precision), or reaches 1e-13."""
    g = torch.Generator().manual_seed(seed)
    n = tensor.ndim
    factors = [leading_singular_vectors(unfold(tensor, k), rank, g) for k in range(n)]
    idx = letters(n)
    norm = torch.linalg.vector_norm(tensor)
    previous = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is reported)
        for k in range(n):
            others = [factors[j] for j in range(n) if j != k]
            gram = torch.ones(rank, rank, dtype=tensor.dtype, device=tensor.device)
            for f in others:
                gram = gram * (f.T @ f)
            eq = idx + "," + ",".join(f"{idx[j]}z" for j in range(n) if j != k) + f"->{idx[k]}z"
            mttkrp = torch.einsum(eq, tensor, *others)
            factors[k] = mttkrp @ torch.linalg.pinv(gram, hermitian=True)
        # The exact residual: the expansion ||X||^2 - 2<X,[[A]]> + ||[[A]]||^2 loses half the digits to
        # cancellation, and kernels are small enough to rebuild every sweep.
        residual = float(torch.linalg.vector_norm(cp_rebuild(factors) - tensor) / norm)
        if residual < 1e-13 or (previous is not None and abs(previous - residual) < tol * residual):
            break
        previous = residual
    # normalise columns of all but the first factor; their scale goes into factor 0
    for k in range(1, n):
        scale = torch.linalg.vector_norm(factors[k], dim=0).clamp_min(1e-300)
        factors[k] = factors[k] / scale
        factors[0] = factors[0] * scale
    return CPResult(factors, relative_error(cp_rebuild(factors), tensor), it)
