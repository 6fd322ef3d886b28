"""A categorical posterior over the quantised values of one weight tensor (dissertation chapter 5).

Every entry w_i takes a value scale x q_k from a fixed grid of levels q (`levels(bits)`), with
probabilities softmax(logits_i). The scale is one learned number per tensor. The posterior is
mean-field: entries are independent, which is what makes propagation sampling-free.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INIT_FLOOR = 1e-4  # probability every level keeps at initialisation, so no logit starts at -inf


def levels(bits: int) -> torch.Tensor:
    """1 bit: {-1, +1} (the dissertation's binary weights); B bits: the 2^B integers -2^(B-1) .. 2^(B-1) - 1,
    the two's-complement grid, which holds 0 (factors have many small entries)."""
    if bits == 1:
        return torch.tensor([-1.0, 1.0])
    half = 2 ** (bits - 1)
    return torch.arange(-half, half, dtype=torch.float64).float()


def round_to_grid(w: torch.Tensor, grid: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """The index of the nearest level of scale x grid for each entry (`scale` broadcasts against `w`)."""
    return (w[..., None] / torch.as_tensor(scale, dtype=w.dtype)[..., None] - grid.to(w)).abs().argmin(-1)


def fit_scale(w: torch.Tensor, grid: torch.Tensor, per_channel: bool = False, candidates: int = 64) -> torch.Tensor:
    """The scale (one, or one per slice w[c] with `per_channel`) that minimises the squared error of
    rounding `w` to scale x grid, searched over fractions of the scale that covers max |w|; for 1 bit
    the optimum is mean |w| and is taken. Returned with w's number of dimensions (broadcastable)."""
    w = w.detach().double()
    rows = w.reshape(w.shape[0], -1) if per_channel and w.dim() > 1 else w.reshape(1, -1)
    grid = grid.double().to(w.device)
    if len(grid) == 2:
        best = rows.abs().mean(1).clamp_min(1e-12)
    else:
        top = rows.abs().amax(1).clamp_min(1e-12) / float(grid.abs().max())
        best, best_err = top.clone(), torch.full_like(top, float("inf"))
        for f in torch.linspace(0.2, 1.0, candidates).tolist():
            s = (top * f)[:, None]
            err = (rows - s * grid[round_to_grid(rows, grid, s)]).pow(2).sum(1)
            better = err < best_err
            best, best_err = torch.where(better, top * f, best), torch.where(better, err, best_err)
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel and w.dim() > 1 else (1,) * w.dim()
    return best.reshape(shape)


def rounding_probabilities(w: torch.Tensor, grid: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """[..., K]: stochastic rounding between the two levels around each entry, so E[w] = w inside the
    grid's range (entries outside it go to the end level)."""
    q = grid.to(w)
    x = (w / torch.as_tensor(scale, dtype=w.dtype)).clamp(float(q[0]), float(q[-1]))
    hi = torch.searchsorted(q, x.contiguous(), right=False).clamp(1, len(q) - 1)
    lo = hi - 1
    frac = (x - q[lo]) / (q[hi] - q[lo])
    p = torch.zeros(*w.shape, len(q), dtype=w.dtype, device=w.device)
    p.scatter_(-1, lo[..., None], (1 - frac)[..., None])
    p.scatter_add_(-1, hi[..., None], frac[..., None])
    return p


class QuantizedPosterior(nn.Module):
    """Q(w) = prod_i Categorical(softmax(logits_i)) over scale x levels; one scale, or with
    `per_channel` one per slice w[c] (the first dimension: a conv's output channel, a factor's first mode)."""

    def __init__(self, shape: tuple[int, ...], bits: int, dtype: torch.dtype = torch.float32,
                 per_channel: bool = False):
        super().__init__()
        self.bits = bits
        grid = levels(bits).to(dtype)
        self.register_buffer("levels", grid)
        self.logits = nn.Parameter(torch.zeros(*shape, len(grid), dtype=dtype))
        scales = (shape[0],) + (1,) * (len(shape) - 1) if per_channel and len(shape) > 1 else (1,) * len(shape)
        self.log_scale = nn.Parameter(torch.zeros(scales, dtype=dtype))
        # 1 / the temperature of the categoricals: Q_i = softmax(sharpness x logits_i). Training anneals it
        # upwards so the posterior ends concentrated and the exported MAP QNN is the network the bound was
        # fitted to; argmax (the MAP codes) does not depend on it. Set from the step, so not persisted.
        self.register_buffer("sharpness", torch.ones((), dtype=dtype), persistent=False)

    @classmethod
    def from_weight(cls, w: torch.Tensor, bits: int, per_channel: bool = False,
                    floor: float = INIT_FLOOR) -> QuantizedPosterior:
        """Initialised around a trained weight: its mean is `w` (inside the grid's range), the mass on the
        two levels around each entry, every other level holding `floor`."""
        w = w.detach()
        post = cls(tuple(w.shape), bits, w.dtype, per_channel).to(w.device)
        scale = fit_scale(w, post.levels, per_channel)
        p = rounding_probabilities(w.double(), post.levels.double(), scale)
        k = p.shape[-1]
        p = p * (1 - k * floor) + floor
        with torch.no_grad():
            post.logits.copy_(p.log().to(w.dtype))
            post.log_scale.copy_(scale.log().to(w.dtype))
        return post

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def log_probs(self) -> torch.Tensor:
        return (self.logits * self.sharpness).log_softmax(-1)

    def probs(self) -> torch.Tensor:
        return self.log_probs().exp()

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
        logp = self.log_probs()
        return -(logp.exp() * logp).sum()

    def kl_uniform(self) -> torch.Tensor:
        """KL(Q || uniform prior over the levels) = sum_i (log K - H_i) >= 0."""
        return self.logits[..., 0].numel() * math.log(self.logits.shape[-1]) - self.entropy()

    def codes(self) -> torch.Tensor:
        """The most likely level of each entry (the MAP weight's integer code), as indices into `levels`."""
        return self.logits.argmax(-1)

    def value(self, codes: torch.Tensor) -> torch.Tensor:
        """scale x levels[codes] (for `codes` with a leading sample dimension too)."""
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
