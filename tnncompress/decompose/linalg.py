"""Small tensor-algebra helpers shared by the decompositions (torch, any device, any float dtype)."""

from __future__ import annotations

import math
import string

import torch


def unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-n unfolding: rows indexed by `mode`, columns by the other modes in order."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def leading_singular_vectors(matrix: torch.Tensor, rank: int, generator: torch.Generator | None = None
                             ) -> torch.Tensor:
    """The `rank` leading left singular vectors. When the matrix has fewer (it is wider than tall, or
    rank-deficient), random columns complete them, orthonormalised against the others while the rank
    fits in the row count (so Tucker projections stay exact), merely random beyond it (CP initialisation)."""
    # The eigenvectors of the smaller Gram matrix give the singular vectors at a fraction of the cost of
    # an SVD of the whole unfolding (512 x 4608 for a 3x3 conv, 512 x 9R inside HOOI); only numerically
    # nonzero singular values are kept, and the columns are re-orthonormalised (QR) so that a projection
    # onto a full basis stays exact.
    wide = matrix.shape[1] > matrix.shape[0]
    values, vectors = torch.linalg.eigh(matrix @ matrix.T if wide else matrix.T @ matrix)
    values, vectors = values.flip(0), vectors.flip(1)
    keep = values > values[0].clamp_min(0) * 1e-13
    vectors = vectors[:, keep]
    u = vectors if wide else matrix @ (vectors / values[keep].sqrt())
    u, _ = torch.linalg.qr(u)
    if rank <= u.shape[1]:
        return u[:, :rank]
    extra = torch.randn(matrix.shape[0], rank - u.shape[1], generator=generator, dtype=matrix.dtype)
    basis = torch.cat([u, extra.to(matrix.device)], dim=1)
    if rank <= matrix.shape[0]:
        q, _ = torch.linalg.qr(basis)
        return q
    return basis


def mode_product(tensor: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """tensor x_mode matrix, with matrix of shape [new, old]."""
    return torch.tensordot(matrix, tensor, dims=([1], [mode])).movedim(0, mode)


def relative_error(approx: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(approx - target) / torch.linalg.vector_norm(target).clamp_min(1e-300))


def letters(n: int) -> str:
    return string.ascii_lowercase[:n]


def split_modes(shape: tuple[int, ...]) -> int:
    """The k that splits the modes into [0, k) and [k, n) with the larger half's size least (both halves
    non-empty): the two products with the tensor cost the same for any k, the rest grows with the halves."""
    return min(range(1, len(shape)), key=lambda k: max(math.prod(shape[:k]), math.prod(shape[k:])))
