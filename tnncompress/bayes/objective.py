"""The learning objective of a BQN: the alternative ELBO (Theorems 5.1 and 5.2) and the prior term.

For logits h ~ N(mu, diag nu) (mean field) and a softmax with temperature s, Jensen's inequality with
E[exp(h/s)] = exp(mu/s + nu/(2 s^2)) gives, for a target distribution t over the classes (one-hot for a
label, the teacher's softmax for soft targets),

    E[-sum_c t_c log softmax(h/s)_c] <= -sum_c t_c mu_c/s + logsumexp_k(mu_k/s + nu_k/(2 s^2)),

an upper bound on the expected NLL, so its negative lower-bounds the ELBO's data term, *when the logits are
Gaussian with exactly these moments*. Propagated moments are exact only in a narrow case (one quantised
linear layer computing the logits from deterministic inputs, where the Gaussian is the CLT's); through
mean-field propagation of several layers, ReLUs and max pooling they are approximate, and the "bound"
is an approximation of the expected NLL that can fall below it (BayesianQuantizedNetwork.moments_exact
says which; the evaluation reports the Monte Carlo estimate next to it). The prior is
uniform over the levels: KL(Q || P) = sum_i (log K - H(Q_i)). Per sample of a training set of N, the loss
minimised is  bound + lambda * KL / N  (lambda = 1: the negative ELBO per sample, up to a constant).
"""

from __future__ import annotations

import torch

from .propagate import Gauss


def nll_bound(logits: Gauss, targets: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """[B]: the bound of Theorem 5.2 on E[NLL] (an upper bound for Gaussian logits of these moments) for
    labels [B] (int) or target distributions [B, K]."""
    mu, nu = logits
    s = temperature
    spread = mu / s if nu is None else mu / s + nu / (2 * s * s)
    lse = torch.logsumexp(spread, dim=1)
    if targets.dtype in (torch.int64, torch.int32):
        return lse - mu.gather(1, targets[:, None]).squeeze(1) / s
    return lse - (targets * mu).sum(1) / s


def kl_to_uniform(posteriors) -> torch.Tensor:
    return sum(p.kl_uniform() for p in posteriors)


def elbo_loss(logits: Gauss, targets: torch.Tensor, temperature: torch.Tensor, posteriors, lam: float,
              dataset_size: int) -> torch.Tensor:
    """Mean bound over the batch + lam x KL / N: minimising it maximises the (lambda-weighted) alternative ELBO."""
    loss = nll_bound(logits, targets, temperature).mean()
    if lam:
        loss = loss + lam * kl_to_uniform(posteriors) / dataset_size
    return loss
