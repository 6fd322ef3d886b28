"""A Bayesian quantized network: a trained student whose selected weights carry a QuantizedPosterior,
and the three ways to predict with it (dissertation 5.4.1): analytic (moments propagated, no
sampling), Monte Carlo (S sampled QNNs, probabilities averaged) and MAP (the most likely level of
every weight: the deterministic QNN that is exported).

The student itself is not changed: predictions with concrete weights call it with those weights
substituted (torch.func.functional_call); its other parameters (biases, norms, layers left float,
activation quantisers' steps) stay float. What learns with the posteriors is `trainable()`'s.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call

from ..calibrate import CalibrationPool, recalibrate_bn
from ..compress.select import matches_pattern
from ..errors import UsageError, opt
from ..formats import TensorizedLayer
from .activations import quantizers
from .posterior import QuantizedPosterior
from .propagate import Gauss, Propagator
from .result import QnnSize


def quantizable(student: nn.Module, dense: bool, exclude: list[str] = ()) -> list[str]:
    """The parameters that get a posterior: every tensorial layer's factors, and with `dense` the
    weights of the convolutions and linear layers left dense; none of the layers `exclude` matches."""
    names = []
    for name, m in student.named_modules():
        if any(matches_pattern(p, name) for p in exclude):
            continue
        if isinstance(m, TensorizedLayer):
            names += [f"{name}.factors.{i}" for i in range(len(m.factors))]
        elif dense and isinstance(m, (nn.Conv2d, nn.Linear)):
            names.append(f"{name}.weight")
    return names


def _key(name: str) -> str:
    return name.replace(".", "__")  # ModuleDict keys cannot hold dots


class BayesianQuantizedNetwork(nn.Module):
    def __init__(self, student: nn.Module, bits: int, dense: bool = False, per_channel: bool = True,
                 names: list[str] | None = None, exclude: list[str] = ()):
        super().__init__()
        self.student = student.eval()
        self.bits, self.per_channel = bits, per_channel
        self.names = names if names is not None else quantizable(student, dense, exclude)
        if not self.names:
            raise UsageError(f"{opt('bqn_bits')}: the model has no {'' if dense else 'compressed '}layer to quantise"
                             + ("" if dense else f"; add {opt('bqn_dense')} to quantise its dense convolutions and "
                                                 "linear layers"))
        params = dict(student.named_parameters())
        self.posteriors = nn.ModuleDict({_key(n): QuantizedPosterior.from_weight(params[n], bits, per_channel)
                                         for n in self.names})
        # the softmax temperature s of Theorem 5.2, learned in log space; the student's logits are already
        # on the right scale, so it starts at 1
        self.log_temperature = nn.Parameter(torch.zeros((), dtype=params[self.names[0]].dtype))
        self.propagator = Propagator(student, set(self.names))

    def posterior(self, name: str) -> QuantizedPosterior:
        return self.posteriors[_key(name)]

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def float_parameters(self) -> list[nn.Parameter]:
        """The student's parameters that stay float (and train with the posteriors)."""
        quantised = set(self.names)
        return [p for n, p in self.student.named_parameters() if n not in quantised]

    def trainable(self, float_parameters: bool = False) -> list[nn.Parameter]:
        """What the ELBO learns: the posteriors, the softmax temperature and the activation quantisers'
        steps; with `float_parameters`, every other float parameter of the student too."""
        steps = [m.log_step for m in quantizers(self.student).values() if m.bits > 1]
        rest = [p for p in self.float_parameters() if not any(p is s for s in steps)] if float_parameters else []
        return list(self.posteriors.parameters()) + [self.log_temperature] + steps + rest

    # -- predictions --------------------------------------------------------------------------------
    def analytic(self, x: torch.Tensor) -> Gauss:
        """Mean and variance of the logits, propagated (not yet divided by the temperature)."""
        quantised = set(self.names)

        def moments(name: str, p: torch.Tensor):
            return self.posterior(name).moments() if name in quantised else (p, None)

        return self.propagator(x, moments)

    def moments_exact(self) -> str | None:
        """None when the propagated logits' moments are exact, else why not. Exact: one quantised weight, of
        the linear layer that computes the logits, on inputs no random weight reaches (no quantised
        activations), so that each logit is a sum of independent terms with exactly the mean and variance
        propagated, and the logits are independent of one another. Anywhere else the mean field drops the
        covariances that weights shared across positions, channels and layers create, and ReLU and max
        pooling moments assume Gaussian inputs."""
        out = next(n for n in self.propagator.graph.graph.nodes if n.op == "output").args[0]
        layer = self.student.get_submodule(out.target) if getattr(out, "op", None) == "call_module" else None
        if quantizers(self.student):
            return "quantised activations: their moments assume Gaussian inputs"
        if self.names == [f"{out.target}.weight"] and isinstance(layer, nn.Linear):
            return None
        return (f"mean-field moments through {len(self.names)} quantised tensors (the covariances of shared "
                "weights are dropped; ReLU and pooling moments assume Gaussian inputs)")

    def weights(self, kind: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Concrete quantised weights: "map" or one "sample" from the posterior."""
        return {n: (self.posterior(n).map() if kind == "map" else self.posterior(n).sample(generator))
                for n in self.names}

    def logits_with(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The student's logits with `weights` in place of its own, divided by the temperature."""
        return functional_call(self.student, weights, (x,)) / self.temperature

    def qnn(self, weights: dict[str, torch.Tensor], pool: CalibrationPool | None = None) -> nn.Module:
        """A concrete QNN: a copy of the student holding `weights` (see `load_quantised`), computing the
        logits divided by the temperature."""
        model = copy.deepcopy(self.student)
        load_quantised(model, weights, pool)
        return _Tempered(model, self.temperature.detach())

    # -- size ---------------------------------------------------------------------------------------
    def quantised_count(self) -> int:
        return sum(self.posterior(n).logits[..., 0].numel() for n in self.names)

    def size(self) -> QnnSize:
        """Bytes of the MAP QNN as exported: bits per quantised weight (packed), float32 scales,
        float32 for everything else; against the float32 student."""
        quantised = self.quantised_count()
        other = sum(p.numel() for p in self.float_parameters())
        buffers = sum(b.numel() for b in self.student.buffers())
        scales = sum(self.posterior(n).log_scale.numel() for n in self.names)
        qnn = math.ceil(quantised * self.bits / 8) + 4 * scales + 4 * (other + buffers)
        float32 = 4 * (quantised + other + buffers)
        return QnnSize(quantised, other, self.bits, 8 * qnn / (quantised + other), qnn, float32, float32 / qnn)


@torch.no_grad()
def load_quantised(model: nn.Module, weights: dict[str, torch.Tensor], pool: CalibrationPool | None) -> None:
    """Put the quantised `weights` into `model` in place. With a `pool`, its batch norms' statistics are
    re-estimated on it: rounding shifts every layer's output distribution away from the one the float
    student's running statistics describe, and at 1-2 bits that shift alone costs most of the accuracy."""
    params = dict(model.named_parameters())
    for name, w in weights.items():
        params[name].copy_(w.to(params[name].dtype))
    if pool is not None and len(pool):
        recalibrate_bn(model, pool)


class _Tempered(nn.Module):
    def __init__(self, model: nn.Module, temperature: torch.Tensor):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("temperature", temperature.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature
