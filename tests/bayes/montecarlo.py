"""Monte Carlo references for the moment tests: Gaussian inputs, posteriors with random logits, and the
comparison of analytic moments with sampled ones in standard errors."""

from __future__ import annotations

import torch

from tnncompress.bayes.posterior import QuantizedPosterior

SAMPLES = 20_000


def within(mc: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, share: float = 0.97) -> None:
    """Per output entry, the analytic mean and variance against the Monte Carlo ones in standard errors:
    at least `share` of the entries within 3 (a 3-SE band holds 99.7% of honest entries) and none beyond
    4.5 (with a few hundred entries, 4.5 SE happens by chance with probability < 1e-3). Entries that
    share sampled weights move together, so their share is not tested (share=0). An entry that is
    almost surely constant (a ReLU of a very negative input) has a Monte Carlo SE of 0: errors below
    1e-5 are not counted (values here are of order 0.1-1)."""
    n = mc.shape[0]
    m = mc.mean(0)
    dev = mc - m
    v = dev.pow(2).sum(0) / (n - 1)
    se_mean = (v / n).sqrt()
    se_var = (dev.pow(2).var(0) / n).sqrt()
    for name, score in (("mean", (m - mean.detach()).abs() / se_mean.clamp_min(1e-5)),
                        ("variance", (v - var.detach()).abs() / se_var.clamp_min(1e-5))):
        beyond = float((score > 3).double().mean())
        assert beyond <= 1 - share, f"{name}: {beyond:.3f} of the entries beyond 3 SE"
        assert float(score.max()) < 4.5, f"{name}: an entry {float(score.max()):.1f} SE away"


def posterior(shape, bits=2, seed=0) -> QuantizedPosterior:
    g = torch.Generator().manual_seed(seed)
    post = QuantizedPosterior(shape, bits, torch.float64)
    with torch.no_grad():
        post.logits.copy_(torch.randn(post.logits.shape, generator=g, dtype=torch.float64))
        post.log_scale.fill_(-1.0)
    return post


def gaussian_input(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=torch.float64)
    var = torch.rand(shape, generator=g, dtype=torch.float64) * 0.5
    return mean, var


def draw(mean, var, n, g):
    return mean + var.sqrt() * torch.randn((n, *mean.shape), generator=g, dtype=torch.float64)


def weight_samples(post: QuantizedPosterior, n: int, g: torch.Generator) -> torch.Tensor:
    return post.sample(g, n).detach()
