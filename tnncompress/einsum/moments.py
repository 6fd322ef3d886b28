"""First and second moments through a planned conv_einsum (mean field).

Every pairwise step is bilinear: each output entry is a sum of products a_i b_j over distinct pairs. With
the two operands' entries independent (the mean-field assumption), such a sum has

    E[c]   = step(E[a], E[b])
    Var[c] = step(Var[a], E[b]^2) + step(E[a^2], Var[b])        (E[a^2] = E[a]^2 + Var[a])

which is Var(ab) = Var(a) E[b]^2 + E[a^2] Var(b) summed over the pairs, written without the cancelling
difference E[a^2]E[b^2] - E[a]^2E[b]^2. The mean is exact for any plan (the network is multilinear in
independent factors); the variance is exact for one step and treats an intermediate's entries as
independent afterwards, which is the approximation Bayesian quantized networks make (dissertation 5.2.4).
A variance of None is a deterministic operand: its terms vanish and the step runs once or twice.
"""

from __future__ import annotations

import torch

from .contract import ConvEinsumExpression

Moments = tuple[torch.Tensor, torch.Tensor | None]


def step_moments(run, a: Moments, b: Moments) -> Moments:
    """The moments of `run(a, b)` for a bilinear `run` and independent operands."""
    (ma, va), (mb, vb) = a, b
    mean = run(ma, mb)
    var = None
    if va is not None:
        var = run(va, mb * mb)
    if vb is not None:
        term = run(ma * ma + va if va is not None else ma * ma, vb)
        var = term if var is None else var + term
    return mean, var


def expression_moments(expr: ConvEinsumExpression, *operands: Moments) -> Moments:
    """The moments of `expr(*operands)`, each operand given as (mean, variance or None)."""
    nodes: list[Moments | None] = list(operands)
    for i, dims in expr._reductions.items():  # sums of independent entries
        m, v = nodes[i]
        nodes[i] = (m.sum(dims), v.sum(dims) if v is not None else None)
    if expr._prepare_signal is not None:  # zero padding and striding: linear selections
        m, v = nodes[0]
        nodes[0] = (expr._prepare_signal(m), expr._prepare_signal(v) if v is not None else None)
    for i, j, step, swapped in expr._steps:
        a, b = (nodes[j], nodes[i]) if swapped else (nodes[i], nodes[j])
        nodes[i] = nodes[j] = None
        nodes.append(step_moments(step.run, a, b))
    m, v = nodes[-1]
    return m.permute(expr._final_perm), (v.permute(expr._final_perm) if v is not None else None)
