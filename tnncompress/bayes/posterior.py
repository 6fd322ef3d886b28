"""A categorical posterior over the quantised values of one weight tensor (dissertation chapter 5).

Every entry w_i takes a value scale x q_k from a fixed grid of levels q (`levels(bits)`), with
probabilities softmax(logits_i). The scale is one learned number per tensor. The posterior is
mean-field: entries are independent, which is what makes propagation sampling-free.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INIT_FLOOR = 1e-3  # probability every level keeps at initialisation, so no logit starts at -inf


def levels(bits: int) -> torch.Tensor:
    """1 bit: {-1, +1} (the dissertation's binary weights); B bits: the 2^B integers -2^(B-1) .. 2^(B-1) - 1,
    the two's-complement grid, which holds 0 (factors have many small entries)."""
    if bits == 1:
        return torch.tensor([-1.0, 1.0])
    half = 2 ** (bits - 1)
    return torch.arange(-half, half, dtype=torch.float64).float()


def round_to_grid(w: torch.Tensor, grid: torch.Tensor, scale: float) -> torch.Tensor:
    """The index of the nearest level of scale x grid for each entry."""
    return (w[..., None] - scale * grid.to(w)).abs().argmin(-1)


def fit_scale(w: torch.Tensor, grid: torch.Tensor, candidates: int = 64) -> float:
    """The scale that minimises the squared error of rounding `w` to scale x grid (searched over
    fractions of the range that covers max |w|; for 1 bit, mean |w| is the optimum and is taken)."""
    w = w.detach().double().flatten()
    if len(grid) == 2:
        return float(w.abs().mean().clamp_min(1e-12))
    top = float(w.abs().max().clamp_min(1e-12)) / float(grid.abs().max())
    best, best_err = top, math.inf
    for f in torch.linspace(0.2, 1.0, candidates).tolist():
        s = top * f
        err = float((w - s * grid.double()[round_to_grid(w, grid.double(), s)]).pow(2).sum())
        if err < best_err:
            best, best_err = s, err
    return best


def rounding_probabilities(w: torch.Tensor, grid: torch.Tensor, scale: float) -> torch.Tensor:
    """[..., K]: stochastic rounding between the two levels around each entry, so E[w] = w inside the
    grid's range (entries outside it go to the end level)."""
    q = grid.to(w)
    x = (w / scale).clamp(float(q[0]), float(q[-1]))
    hi = torch.searchsorted(q, x.contiguous(), right=False).clamp(1, len(q) - 1)
    lo = hi - 1
    frac = (x - q[lo]) / (q[hi] - q[lo])
    p = torch.zeros(*w.shape, len(q), dtype=w.dtype, device=w.device)
    p.scatter_(-1, lo[..., None], (1 - frac)[..., None])
    p.scatter_add_(-1, hi[..., None], frac[..., None])
    return p


class QuantizedPosterior(nn.Module):
    """Q(w) = prod_i Categorical(softmax(logits_i)) over scale x levels."""

    def __init__(self, shape: tuple[int, ...], bits: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.bits = bits
        grid = levels(bits).to(dtype)
        self.register_buffer("levels", grid)
        self.logits = nn.Parameter(torch.zeros(*shape, len(grid), dtype=dtype))
        self.log_scale = nn.Parameter(torch.zeros((), dtype=dtype))

    @classmethod
    def from_weight(cls, w: torch.Tensor, bits: int, floor: float = INIT_FLOOR) -> QuantizedPosterior:
        """Initialised around a trained weight: its mean is `w` (inside the grid's range), the mass on the
        two levels around each entry, every other level holding `floor`."""
        w = w.detach()
        post = cls(tuple(w.shape), bits, w.dtype).to(w.device)
        scale = fit_scale(w, post.levels)
        p = rounding_probabilities(w.double(), post.levels.double(), scale)
        k = p.shape[-1]
        p = p * (1 - k * floor) + floor
        with torch.no_grad():
            post.logits.copy_(p.log().to(w.dtype))
            post.log_scale.fill_(math.log(scale))
        return post

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def probs(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[w], Var[w]) per entry."""
        p = self.probs()
        q = self.levels
        mean = p @ q
        var = (p @ (q * q) - mean * mean).clamp_min(0.0)
        s = self.scale
        return s * mean, s * s * var

    def entropy(self) -> torch.Tensor:
        """The summed entropy of the entries' categoricals (nats)."""
        logp = self.logits.log_softmax(-1)
        return -(logp.exp() * logp).sum()

    def kl_uniform(self) -> torch.Tensor:
        """KL(Q || uniform prior over the levels) = sum_i (log K - H_i) >= 0."""
        return self.logits[..., 0].numel() * math.log(self.logits.shape[-1]) - self.entropy()

    def codes(self) -> torch.Tensor:
        """The most likely level of each entry (the MAP weight's integer code), as indices into `levels`."""
        return self.logits.argmax(-1)

    def value(self, codes: torch.Tensor) -> torch.Tensor:
        return self.scale * self.levels[codes]

    def map(self) -> torch.Tensor:
        return self.value(self.codes())

    def sample(self, generator: torch.Generator | None = None, n: int | None = None) -> torch.Tensor:
        """One weight tensor drawn from Q, or `n` of them stacked ([n, *shape])."""
        p = self.probs().detach().reshape(-1, self.logits.shape[-1])
        idx = torch.multinomial(p, n or 1, replacement=True, generator=generator)  # [entries, n]
        idx = idx.T.reshape(n or 1, *self.logits.shape[:-1])
        return self.value(idx if n else idx[0])

    def extra_repr(self) -> str:
        return f"shape={tuple(self.logits.shape[:-1])}, bits={self.bits}, levels={self.logits.shape[-1]}"
