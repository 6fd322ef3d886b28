"""Layer-Decomp's algorithms against independent references: numpy's SVD, brute-force rebuilds, exact
recovery of tensors built with known ranks, and TensorLy (the reference implementation) on tensors that
are not low-rank."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tnncompress.decompose import (
    cp_als,
    cp_rebuild,
    get_decomposer,
    hooi,
    max_tt_ranks,
    tr_als,
    tr_rebuild,
    tt_rebuild,
    tt_svd,
    tucker_rebuild,
)
from tnncompress.decompose.linalg import leading_singular_vectors, unfold
from tnncompress.errors import UsageError

SHAPE = (6, 5, 4, 3)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_rebuilds_equal_brute_force_sums():
    f = [_rand(n, 3, seed=i) for i, n in enumerate(SHAPE)]
    brute = np.zeros(SHAPE)
    for idx in itertools.product(*map(range, SHAPE)):
        brute[idx] = sum(np.prod([float(f[k][idx[k], r]) for k in range(4)]) for r in range(3))
    assert np.allclose(cp_rebuild(f).numpy(), brute, rtol=1e-12)
    ring = [_rand(2, 2, 3, seed=1), _rand(3, 5, 2, seed=2), _rand(2, 4, 2, seed=3)]  # bonds 2, 3, 2 closing on 2
    brute = np.zeros((2, 5, 4))
    for i, j, k in itertools.product(range(2), range(5), range(4)):
        brute[i, j, k] = np.trace(ring[0][:, i, :].numpy() @ ring[1][:, j, :].numpy() @ ring[2][:, k, :].numpy())
    assert np.allclose(tr_rebuild(ring).numpy(), brute, rtol=1e-12)
    train = [_rand(1, 2, 3, seed=4), _rand(3, 5, 2, seed=5), _rand(2, 4, 1, seed=6)]
    assert np.allclose(tt_rebuild(train).numpy(), tr_rebuild(train).numpy(), rtol=1e-12)  # a ring with bond 1


def test_leading_singular_vectors_span_numpys():
    for shape in ((20, 7), (7, 20)):
        m = _rand(*shape, seed=7)
        u = leading_singular_vectors(m, 4)
        ref = np.linalg.svd(m.numpy())[0][:, :4]
        assert np.allclose(u.T @ u, np.eye(4), atol=1e-12)
        assert np.allclose(np.abs(ref.T @ u.numpy()), np.eye(4), atol=1e-8)  # the same vectors, up to sign


def test_cp_als_recovers_an_exactly_low_rank_tensor():
    x = cp_rebuild([_rand(n, 3, seed=10 + i) for i, n in enumerate(SHAPE)])
    result = cp_als(x, 3)
    assert result.rel_error < 1e-7 and _rel(cp_rebuild(result.factors), x) == pytest.approx(result.rel_error)


def test_hooi_is_exact_at_full_rank_and_beats_the_truncated_hosvd():
    x = _rand(*SHAPE, seed=11)
    full = hooi(x, {0: 6, 1: 5})
    assert full.rel_error < 1e-12
    result = hooi(x, {0: 3, 1: 2})
    for u in result.factors.values():
        assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=u.dtype), atol=1e-12)  # orthonormal
    # the truncated HOSVD (numpy's SVD of each unfolding) is where HOOI starts: it can only improve on it
    hosvd = {m: torch.from_numpy(np.linalg.svd(unfold(x, m).numpy())[0][:, :r]) for m, r in ((0, 3), (1, 2))}
    core = x
    for m, u in hosvd.items():
        core = torch.tensordot(u.T, core, dims=([1], [m])).movedim(0, m)
    assert result.rel_error <= _rel(tucker_rebuild(core, hosvd), x) + 1e-12


def test_tt_svd_meets_the_oseledets_bound():
    x = _rand(*SHAPE, seed=12)
    assert max_tt_ranks(SHAPE) == [6, 12, 3]
    assert tt_svd(x, max_tt_ranks(SHAPE)).rel_error < 1e-12
    ranks = [3, 4, 2]
    result = tt_svd(x, ranks)
    # ||X - TT||^2 <= sum over bonds of the energy TT-SVD discards there, each at most the discarded tail
    # of that unfolding's singular values (Oseledets 2011, Theorem 2.2)
    bound = 0.0
    for k, r in enumerate(ranks, start=1):
        s = np.linalg.svd(x.reshape(int(np.prod(SHAPE[:k])), -1).numpy(), compute_uv=False)
        bound += float((s[r:] ** 2).sum())
    assert float((tt_rebuild(result.cores) - x).norm() ** 2) <= bound * (1 + 1e-9)


@pytest.mark.slow
def test_tr_als_recovers_an_exact_ring_and_improves_on_its_tt_start():
    ring = [_rand(2, 6, 3, seed=13), _rand(3, 5, 2, seed=14), _rand(2, 4, 2, seed=15), _rand(2, 3, 2, seed=16)]
    x = tr_rebuild(ring)
    assert tr_als(x, [2, 3, 2, 2]).rel_error < 1e-6  # ALS creeps near an exact fit (swamps): 1e-7 here
    noisy = _rand(*SHAPE, seed=17)
    start = tt_svd(noisy, [2, 2, 2]).rel_error  # TR-ALS starts from TT-SVD with the closing bond 1
    assert tr_als(noisy, [2, 2, 2, 2]).rel_error <= start + 1e-12


@pytest.mark.parametrize("kind", ["cp", "tucker", "tt", "tr"])
def test_native_decompositions_are_as_good_as_tensorlys(kind):
    """On a tensor that is not low-rank, our error is at most TensorLy's (+2%: ALS runs stop at
    different points); both rebuild to what they report."""
    x = _rand(*SHAPE, seed=18)
    errors = {}
    for name in ("native", "tensorly"):
        dec = get_decomposer(name)
        if kind == "cp":
            approx = cp_rebuild(dec.cp(x, 4, seed=0))
        elif kind == "tucker":
            core, factors = dec.tucker(x, {0: 3, 1: 3}, seed=0)
            approx = tucker_rebuild(core, factors)
        elif kind == "tt":
            approx = tt_rebuild(dec.tt(x, [3, 4, 2]))
        else:
            approx = tr_rebuild(dec.tr(x, [2, 3, 2, 2], seed=0))
        errors[name] = _rel(approx, x)
    assert errors["native"] <= errors["tensorly"] * 1.02 + 1e-12, errors


def test_unknown_decomposer_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown decomposer 'magic'"):
        get_decomposer("magic")


def _textbook_cp_als(x, rank, sweeps):
    """Kolda and Bader's ALS, written out: the explicit Khatri-Rao matrix of every other mode, the
    unfolding times it, the pseudo-inverse of the Hadamard product of Gram matrices."""
    n, g = x.ndim, torch.Generator().manual_seed(0)  # cp_als's start: one generator across the modes
    factors = [leading_singular_vectors(unfold(x, k), rank, g) for k in range(n)]
    for _ in range(sweeps):
        for k in range(n):
            others = [j for j in range(n) if j != k]
            kr = torch.ones(1, rank, dtype=x.dtype)
            for j in others:  # rows ordered as unfold's columns: the first other mode slowest
                kr = (kr[:, None, :] * factors[j][None, :, :]).reshape(-1, rank)
            gram = torch.ones(rank, rank, dtype=x.dtype)
            for j in others:
                gram = gram * (factors[j].T @ factors[j])
            factors[k] = unfold(x, k) @ kr @ torch.linalg.pinv(gram)
    return factors


@pytest.mark.parametrize("shape, rank", [((7, 6, 5), 4), ((4, 5, 3, 6), 5), ((3, 4, 2, 3, 5), 6), ((9, 8), 3)])
def test_cp_als_takes_the_textbook_steps(shape, rank):
    """The dimension tree changes how each MTTKRP is summed, not what ALS does: after 5 sweeps the model
    is the textbook algorithm's to 1e-9 (factor scales differ: the result normalises them)."""
    from tnncompress.decompose.cp import khatri_rao
    from tnncompress.decompose.linalg import split_modes

    x = _rand(*shape, seed=21)
    result = cp_als(x, rank, max_iter=5, tol=0.0)
    assert result.iterations == 5
    want = cp_rebuild(_textbook_cp_als(x, rank, 5))
    assert _rel(cp_rebuild(result.factors), want) < 1e-9
    assert result.rel_error == pytest.approx(_rel(want, x), rel=1e-9)
    a, b = _rand(3, 2, seed=1), _rand(4, 2, seed=2)
    assert torch.equal(khatri_rao([a, b]), torch.stack([a[i] * b[j] for i in range(3) for j in range(4)]))
    assert split_modes((64, 64, 64, 9)) == 2 and split_modes((512, 3, 3, 512)) == 2 and split_modes((9, 8)) == 1


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 5), (3, 4, 2, 5), (2, 3, 4, 2, 3)])
def test_tr_als_normal_equations_from_two_half_contractions_are_the_gradients_of_the_fit(shape):
    """B_k = X_(k) Q is the gradient of <X, ring(cores)> in core k (the ring is linear in each core): the
    sweep's two half contractions give it for every core, and the residual from the normal equations is
    the rebuilt one."""
    from tnncompress.decompose.tr import _gram, _HalfContractions, _residual

    d = len(shape)
    ranks = [2 + (k % 3) for k in range(d)]
    cores = [_rand(ranks[k], shape[k], ranks[(k + 1) % d], seed=30 + k) for k in range(d)]
    x = _rand(*shape, seed=29)
    halves = _HalfContractions(x)
    for segment in range(2):
        halves.start(cores, segment)
        for k in halves.mine:
            leaf = cores[k].clone().requires_grad_()
            fit = (x * tr_rebuild([leaf if j == k else c for j, c in enumerate(cores)])).sum()
            (grad,) = torch.autograd.grad(fit, leaf)  # [R_k, I_k, R_k+1]
            want = grad.permute(1, 0, 2).reshape(shape[k], -1)
            assert torch.allclose(halves.rhs(cores, k), want, rtol=1e-12, atol=1e-12)
            sol, gram = cores[k].permute(1, 0, 2).reshape(shape[k], -1), _gram(cores, k)
            rebuilt = float((tr_rebuild(cores) - x).norm() / x.norm())
            assert abs(_residual(float(x.norm()) ** 2, gram, want, sol) - rebuilt) < 1e-10
    assert sorted(halves.segments[0]) + sorted(halves.segments[1]) == list(range(d))
