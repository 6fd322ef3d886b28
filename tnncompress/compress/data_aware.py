"""Data-aware Layer-Decomp: fit each compressed layer's output, not its kernel.

Weight-space Layer-Decomp minimises ||K - K~||, which weighs every kernel entry alike; the network
only sees K~ through its inputs, whose patches are far from white. Here each layer (with the
normalisation after it) is fitted to the teacher's output on the calibration pool:

    min  E || s (W(F_1..F_n) x + b) + c - t ||^2

where x are the layer's input patches, t the teacher's output (after its norm), and s, c the norm's
per-channel scale and shift. Every format's kernel W is linear in each factor, so with the others fixed
a factor's refit is a ridge least-squares problem; it is solved by conjugate gradients on its normal
equations, whose operator goes through the format's own rebuild (autograd gives the transpose) and
the layer's input moments (calibrate/moments.py), never through the activations. Factors are refitted
in turn (alternating, as ALS does), then s and c (or the bias, without a norm) in closed form. Every
step is kept only when it lowers the error, so the result is never worse than where it started.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..calibrate import ActivationCache, CalibrationPool, LayerMoments, cache_bytes, collect_moments
from ..calibrate.prefix import LayerInputs
from ..capture import capture
from ..formats import TensorizedLayer, planned
from ..inspect import call_order, norm_after

log = logging.getLogger(__name__)

NORMS = (nn.BatchNorm2d, nn.BatchNorm1d)
# A conjugate-gradient step that lowers the layer's output error by less than this share of its target's
# energy ends the solve: on ResNet-32 it halves the steps and leaves every layer's error the same to 4
# digits (a fixed 50 steps before)
STEP_TOL = 1e-7


@dataclass
class RefitResult:
    name: str
    norm: str | None = None  # the norm refitted with the layer
    error_before: float = 0.0  # relative output error: sqrt(E||out - t||^2 / E||t||^2)
    error_after: float = 0.0
    steps_kept: int = 0
    steps_rejected: int = 0
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)  # the error after each kept step


def _affine(norm: nn.Module | None, t: int, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel scale and shift an eval-mode norm applies, [g, T] each."""
    if norm is None:
        return torch.ones(g, t, dtype=torch.float64), torch.zeros(g, t, dtype=torch.float64)
    inv = 1 / torch.sqrt(norm.running_var.double() + norm.eps)
    s = (norm.weight.detach().double() if norm.affine else torch.ones_like(inv)) * inv
    c = (norm.bias.detach().double() if norm.affine else torch.zeros_like(inv)) - norm.running_mean.double() * s
    return s.reshape(g, t), c.reshape(g, t)


def _set_affine(norm: nn.Module, s: torch.Tensor, c: torch.Tensor) -> None:
    with torch.no_grad():
        root = torch.sqrt(norm.running_var.double() + norm.eps)
        norm.weight.copy_((s.reshape(-1) * root).to(norm.weight.dtype))
        norm.bias.copy_((c.reshape(-1) + norm.running_mean.double() * s.reshape(-1)).to(norm.bias.dtype))


class _Fit:
    """The layer's parameters in float64 and the error they give on the moments."""

    def __init__(self, layer: TensorizedLayer, norm: nn.Module | None, m: LayerMoments):
        self.layer, self.norm, self.m = layer, norm, m
        shape = layer.shape
        self.g, self.t = shape.groups, shape.t
        self.factors = [f.detach().double().clone() for f in layer.factors]
        self.b = (layer.bias.detach().double().reshape(self.g, self.t) if layer.bias is not None
                  else torch.zeros(self.g, self.t, dtype=torch.float64))
        self.s, self.c = _affine(norm, self.t, self.g)
        self.energy = float(m.target_energy())

    def kernel(self, factors: list[torch.Tensor]) -> torch.Tensor:
        k = self.layer.format.rebuild(factors, self.layer.shape, self.layer.tensorization)
        return k.reshape(self.g, self.t, -1)  # [g, T, K]

    def error(self) -> float:
        with torch.no_grad():
            return float(self.m.error(self.kernel(self.factors), self.b, self.s, self.c))

    def relative(self, error: float) -> float:
        return (max(error, 0.0) / max(self.energy, 1e-300)) ** 0.5

    def refit_factor(self, k: int, ridge: float, iterations: int) -> list[torch.Tensor]:
        """Factor k minimising E||s(W x + b) + c - t||^2 with the others fixed: (H + lambda I) f = r by CG,
        H f = M^T(S^2 M(f) E[xx^T]) and r = M^T(G), M the (linear) map from factor k to the kernel."""
        m, s2 = self.m, self.s * self.s

        def kernel_of(f: torch.Tensor) -> torch.Tensor:
            return self.kernel([f if i == k else x for i, x in enumerate(self.factors)])

        # M^T y is the gradient of <M(f), y> in f, at any f since M is linear: one graph, kept, serves
        # every product (a backward pass each, no forward)
        with torch.enable_grad():
            anywhere = torch.zeros_like(self.factors[k], requires_grad=True)
            graph = kernel_of(anywhere)

        def transpose(y: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad(graph, anywhere, y, retain_graph=True)[0]

        # G = s (E[x t^T]^T - (s b + c) E[x]^T): the linear term of the error in W
        g_lin = self.s[..., None] * (m.xt.transpose(1, 2) - (self.s * self.b + self.c)[..., None] * m.x[:, None, :])
        rhs = transpose(g_lin)
        scale = float(torch.einsum("gt,gkk->", s2, m.xx)) / max(m.xx.shape[-1] * self.t * self.g, 1)
        lam = ridge * max(scale, 1e-300)

        def apply(f: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                y = s2[..., None] * torch.einsum("gtk,gkl->gtl", kernel_of(f), m.xx)
            return transpose(y) + lam * f

        x = self.factors[k].clone()
        r = rhs - apply(x)
        p, rr = r.clone(), float((r * r).sum())
        target = 1e-20 * max(float((rhs * rhs).sum()), 1e-300)
        for _ in range(iterations):
            if rr <= target:
                break
            ap = apply(p)
            alpha = rr / max(float((p * ap).sum()), 1e-300)
            x, r = x + alpha * p, r - alpha * ap
            if alpha * rr <= STEP_TOL * self.energy:  # the step lowered the output error by next to nothing
                break
            rr, previous = float((r * r).sum()), rr
            p = r + (rr / previous) * p
        return [x if i == k else f for i, f in enumerate(self.factors)]

    def refit_affine(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, s, c): with a norm, its per-channel scale and shift by linear regression of t on z = W x + b;
        without one, the bias that removes the mean residual."""
        m, w = self.m, self.kernel(self.factors)
        wx = torch.einsum("gtk,gk->gt", w, m.x)
        z = wx + self.b
        zz = torch.einsum("gtk,gkl,gtl->gt", w, m.xx, w) + 2 * self.b * wx + self.b * self.b
        zt = torch.einsum("gtk,gkt->gt", w, m.xt) + self.b * m.t
        if self.norm is None:
            return self.b + (m.t - z), self.s, self.c  # s = 1, c = 0: the bias alone
        var, cov = (zz - z * z).clamp_min(1e-300), zt - z * m.t
        s = torch.where(var > 1e-12 * zz.clamp_min(1e-300), cov / var, self.s)
        return self.b, s, m.t - s * z


def refit(name: str, layer: TensorizedLayer, norm: nn.Module | None, moments: LayerMoments, sweeps: int = 3,
          ridge: float = 1e-6, iterations: int = 50) -> RefitResult:
    """Refit `layer` (and `norm`, the normalisation fed by it, when there is one) in place to the targets of
    `moments`; returns the relative output error before and after."""
    started = time.perf_counter()
    fit = _Fit(layer, norm if isinstance(norm, NORMS) and norm.affine else None, moments)
    best = fit.error()
    result = RefitResult(name, None, fit.relative(best), fit.relative(best))
    bias_fittable = layer.bias is not None or fit.norm is not None
    for _ in range(sweeps):
        start_of_sweep = best
        candidates = ([("affine", None)] if bias_fittable else []) + [("factor", k) for k in range(len(fit.factors))]
        for kind, k in candidates:
            saved = (fit.factors, fit.b, fit.s, fit.c)
            if kind == "factor":
                fit.factors = fit.refit_factor(k, ridge, iterations)
            else:
                fit.b, fit.s, fit.c = fit.refit_affine()
            error = fit.error()
            if error < best:  # never worse than the start: a step that raises the error is undone
                best = error
                result.steps_kept += 1
                result.history.append(fit.relative(error))
            else:
                fit.factors, fit.b, fit.s, fit.c = saved
                result.steps_rejected += 1
        if start_of_sweep - best <= 1e-4 * start_of_sweep:
            break
    with torch.no_grad():
        for p, f in zip(layer.factors, fit.factors, strict=True):
            p.copy_(f.to(p.dtype))
        if layer.bias is not None:
            layer.bias.copy_(fit.b.reshape(-1).to(layer.bias.dtype))
    if fit.norm is not None:
        _set_affine(fit.norm, fit.s, fit.c)
    result.error_after = fit.relative(best)
    result.seconds = time.perf_counter() - started
    return result


def data_aware_init(teacher: nn.Module, student: nn.Module, pool: CalibrationPool, input_size: tuple[int, int, int],
                    inputs_from: str = "student", sweeps: int = 3, memory_budget: int = 1 << 30,
                    batch_size: int = 128) -> list[RefitResult]:
    """Refit every tensorial layer of `student` (with the norm fed by it) to the teacher's output of the
    same layer (or norm) on the calibration pool, in forward order. With `inputs_from="student"` each
    layer sees the student's own upstream, already refitted, so that it corrects what the layers before
    it could not match (as Seq-KD's Eq. 2.10 does); with "teacher", the teacher's. The teacher's targets
    (and inputs) come from one pass, kept in an activation cache when it fits `memory_budget`; otherwise
    from a pass of the teacher per layer."""
    order, _ = call_order(student, input_size)
    modules = dict(student.named_modules())
    layers = [n for n in order if isinstance(modules[n], TensorizedLayer)]
    norms = norm_after(student, input_size, layers)
    outputs = [norms[n] or n for n in layers]
    inputs = layers if inputs_from == "teacher" else []
    teacher_bytes = cache_bytes(teacher, pool, inputs, outputs)
    cache = (ActivationCache(teacher, pool, inputs, outputs, memory_budget, batch_size=batch_size)
             if teacher_bytes <= memory_budget else None)
    device = next(student.parameters()).device
    results = []
    try:
        # the dense-kernel plan: fast on small layers, and unlike a timed choice the same in every run
        # (a plan picked by timing moves the inputs' last bits, and the fitted factors with them)
        with planned(student, "rebuild"):
            # the student's layer inputs, running only what the layers refitted so far leave to run
            student_inputs = (LayerInputs(student, input_size, len(pool),
                                          memory_budget - teacher_bytes * (cache is not None))
                              if inputs_from == "student" else None)
            for name, output in zip(layers, outputs, strict=True):
                batches = [(start, min(start + batch_size, len(pool))) for start in range(0, len(pool), batch_size)]
                sources = (student_inputs.inputs(name, (pool.images[a:b].to(device) for a, b in batches))
                           if student_inputs is not None else None)

                def pairs(name=name, output=output, batches=batches, sources=sources):
                    for a, b in batches:
                        if cache is not None:
                            t = cache[(output, "output")][a:b]
                            x = cache[(name, "input")][a:b] if sources is None else next(sources)
                        else:
                            got = capture(teacher, pool.images[a:b].to(device),
                                          inputs=(name,) if sources is None else (), outputs=(output,))
                            t, x = got[(output, "output")], got[(name, "input")] if sources is None else next(sources)
                        yield x.cpu(), t.cpu()
                    if sources is not None:
                        next(sources, None)  # the end of the pass: what it kept is kept for the next layer

                moments = collect_moments(modules[name], pairs())
                norm = student.get_submodule(norms[name]) if norms[name] else None
                results.append(refit(name, modules[name], norm, moments, sweeps=sweeps))
                results[-1].norm = norms[name] if norm is not None else None
                log.debug("%s: relative output error %.4f -> %.4f", name, results[-1].error_before,
                          results[-1].error_after)
    finally:
        if cache is not None:
            cache.close()
    return results
