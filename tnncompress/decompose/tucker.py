"""Tucker decomposition of some modes by higher-order orthogonal iteration (HOOI; De Lathauwer et al.
2000), initialised by the truncated HOSVD. Modes not listed keep their full size (Tucker-2 for a
convolution kernel: factor the two channel modes, keep the spatial ones)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .linalg import leading_singular_vectors, mode_product, relative_error, unfold


@dataclass
class TuckerResult:
    core: torch.Tensor
    factors: dict[int, torch.Tensor]  # mode -> [I_mode, R_mode], orthonormal columns
    rel_error: float
    iterations: int


def tucker_rebuild(core: torch.Tensor, factors: dict[int, torch.Tensor]) -> torch.Tensor:
    out = core
    for mode, u in factors.items():
        out = mode_product(out, u, mode)
    return out


def hooi(tensor: torch.Tensor, ranks: dict[int, int], max_iter: int = 100, tol: float = 1e-5,
         seed: int = 0) -> TuckerResult:
    """Stops after `max_iter` sweeps or when the error changes by less than `tol` relative to itself (CP-ALS's
    rule; at 1e-7 a random 512 x 512 x 9 kernel ran all 100 sweeps, 3.6x as long, for 0.02% less error)."""
    g = torch.Generator().manual_seed(seed)
    for mode, r in ranks.items():
        if r > tensor.shape[mode]:
            raise ValueError(f"Tucker rank {r} exceeds mode {mode}'s size {tensor.shape[mode]}")
    factors = {m: leading_singular_vectors(unfold(tensor, m), r, g) for m, r in ranks.items()}
    norm = torch.linalg.vector_norm(tensor)
    previous = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is reported)
        for m, r in ranks.items():
            y = tensor
            for other, u in factors.items():
                if other != m:
                    y = mode_product(y, u.T, other)
            factors[m] = leading_singular_vectors(unfold(y, m), r, g)
        core = tensor
        for m, u in factors.items():
            core = mode_product(core, u.T, m)
        # with orthonormal factors, ||X - rebuild||^2 = ||X||^2 - ||core||^2
        residual = float((norm**2 - torch.linalg.vector_norm(core) ** 2).clamp_min(0).sqrt() / norm)
        if residual < 1e-13 or (previous is not None and abs(previous - residual) < tol * residual):
            break
        previous = residual
    return TuckerResult(core, factors, relative_error(tucker_rebuild(core, factors), tensor), it)
