"""Who computes the decompositions: our algorithms ("native") or TensorLy's ("tensorly", the reference
implementation the field uses), behind one interface, so that a format's Layer-Decomp names what it
needs (a CP, a Tucker, a train, a ring) and not how it is computed.

TensorLy is the slower reference (BENCHMARKS.md: 1.1-16x on ResNet-50); it is offered so that a result
can be checked against it, and the tests hold our decompositions to its errors. Its tensor ring is
TR-SVD (no ALS sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import UsageError
from ..registry import Registry
from .cp import cp_als
from .tr import tr_als
from .tt import tt_svd
from .tucker import hooi


class Decomposer(Protocol):
    name: str

    def cp(self, tensor: torch.Tensor, rank: int, seed: int) -> list[torch.Tensor]:
        """Factors [I_n, R], the weights absorbed into the first."""

    def tucker(self, tensor: torch.Tensor, ranks: dict[int, int], seed: int
               ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(core, {mode: factor [I_mode, R_mode]}) of a Tucker decomposition of the listed modes."""

    def tt(self, tensor: torch.Tensor, ranks: list[int]) -> list[torch.Tensor]:
        """Cores [R_(k-1), I_k, R_k] with R_0 = R_d = 1, for the d-1 bond ranks."""

    def tr(self, tensor: torch.Tensor, ranks: list[int], seed: int) -> list[torch.Tensor]:
        """Cores [R_k, I_k, R_(k+1 mod d)] for the d ring ranks."""


@dataclass(frozen=True)
class Native:
    name: str = "native"

    def cp(self, tensor, rank, seed):
        return cp_als(tensor, rank, seed=seed).factors

    def tucker(self, tensor, ranks, seed):
        result = hooi(tensor, ranks, seed=seed)
        return result.core, result.factors

    def tt(self, tensor, ranks):
        return tt_svd(tensor, ranks).cores

    def tr(self, tensor, ranks, seed):
        return tr_als(tensor, ranks, seed=seed).cores


@dataclass(frozen=True)
class TensorLy:
    name: str = "tensorly"

    @staticmethod
    def _context():
        import tensorly as tl

        return tl.backend_context("pytorch")

    def cp(self, tensor, rank, seed):
        from tensorly.decomposition import parafac

        with self._context():
            cp = parafac(tensor, rank, init="svd", random_state=seed, n_iter_max=100, tol=1e-8)
        factors = [f.clone() for f in cp.factors]
        factors[0] = factors[0] * cp.weights
        return factors

    def tucker(self, tensor, ranks, seed):
        from tensorly.decomposition import partial_tucker

        modes = sorted(ranks)
        with self._context():
            result = partial_tucker(tensor, rank=[ranks[m] for m in modes], modes=modes, init="svd",
                                    random_state=seed)
        core, factors = result[0] if isinstance(result[0], tuple) else result  # TensorLy 0.10 adds the errors
        return core, dict(zip(modes, factors, strict=True))

    def tt(self, tensor, ranks):
        from tensorly.decomposition import tensor_train

        with self._context():
            return list(tensor_train(tensor, [1, *ranks, 1]).factors)

    def tr(self, tensor, ranks, seed):
        from tensorly.decomposition import tensor_ring

        try:
            with self._context():
                return list(tensor_ring(tensor, [*ranks, ranks[0]], random_state=seed).factors)
        except (ValueError, IndexError, RuntimeError) as exc:
            raise UsageError(f"TensorLy's TR-SVD cannot give ring ranks {ranks} for a tensor of shape "
                             f"{tuple(tensor.shape)} ({exc}); use the native decomposer") from None


DECOMPOSERS: Registry[Decomposer] = Registry("decomposer")
for _decomposer in (Native(), TensorLy()):
    DECOMPOSERS.add(_decomposer.name, _decomposer)


def get_decomposer(name: str) -> Decomposer:
    return DECOMPOSERS.get(name)
