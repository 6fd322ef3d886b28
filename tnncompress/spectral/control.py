"""Keeping the compressed layers' singular values in bounds while they train.

`SpectralControl` is what distillation holds: `project(names)` applies the constraint to those layers
(clip:C through clip.py; divide:C scales a layer by 1 / max(1, sigma / C), sigma from a power
iteration whose vector persists between calls, Gouk et al. 2021) and bounds the batch norm after each
(gamma / sqrt(var + eps) <= `bn`); `penalty(names)` is the orthogonality penalty on their frame factors,
mean over the Gram matrices' entries of (A^T A - I)^2 (A A^T for a frame wider than tall), which is zero
exactly when the frames are orthonormal, where the core trick needs no QR.
"""

from __future__ import annotations

import torch
from torch import nn

from ..formats.layer import TensorizedLayer, TensorizedLinear
from .clip import ClipResult, clip_layer
from .config import SpectralConfig
from .core import frames
from .layers import _geometry, _grid, _in_channels, check_layer, linear_part, power_iteration
from .lipschitz import bn_after
from .model import layer_inputs


class SpectralControl:
    def __init__(self, model: nn.Module, input_size: tuple[int, ...], config: SpectralConfig):
        self.model, self.config = model, config
        self.constraint = config.parsed()
        self.every = config.projection_every()
        sizes = layer_inputs(model, input_size)
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, TensorizedLayer) and n in sizes}
        for name, module in self.layers.items():  # refused in one line naming the layer
            check_layer(name, module)
        self.sizes = {n: sizes[n] for n in self.layers}
        self.grids = {n: _grid(n, m, sizes[n])[0] for n, m in self.layers.items()}
        self.norms = bn_after(model) if config.bn is not None else {}
        self._vectors: dict[str, torch.Tensor] = {}
        self.projections = 0

    @property
    def projects(self) -> bool:
        return self.constraint is not None and self.constraint.kind in ("clip", "divide")

    def _named(self, names) -> list[str]:
        return list(self.layers) if names is None else [n for n in names if n in self.layers]

    def project(self, names=None) -> list[ClipResult]:
        """Apply the constraint to the named layers (all when None) in place; what each one was."""
        if not self.projects:
            return []
        self.projections += 1
        results = []
        for name in self._named(names):
            module = self.layers[name]
            if self.constraint.kind == "clip":
                stride, dilation = _geometry(module)[:2]
                results.append(clip_layer(name, module, self.grids[name], self.constraint.value, stride, dilation))
            else:
                results.append(self._divide(name, module))
            if name in self.norms:
                self._bound_norm(self.model.get_submodule(self.norms[name]))
        return results

    def _divide(self, name: str, module: TensorizedLayer) -> ClipResult:
        x = self._vectors.get(name)
        if x is None:
            p = module.factors[0]
            g = torch.Generator().manual_seed(len(self._vectors))
            shape = (1, _in_channels(module)) + (() if isinstance(module, TensorizedLinear) else self.sizes[name])
            x = torch.randn(*shape, generator=g).to(p)
        sigma, x = power_iteration(linear_part(module), x, self.config.power_iters)
        self._vectors[name] = x
        scale = max(1.0, sigma / self.constraint.value)
        if scale > 1.0:
            with torch.no_grad():
                module.factors[0].div_(scale)  # multilinear: one factor scales the kernel
        return ClipResult(name, "divide", sigma, 0.0, scale > 1.0)

    def _bound_norm(self, bn: nn.Module) -> None:
        if getattr(bn, "weight", None) is None:
            return
        with torch.no_grad():
            gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs().max()
            bn.weight.div_(torch.clamp(gain / self.config.bn, min=1.0))

    def penalty(self, names=None) -> torch.Tensor | None:
        """config.orthogonality x the frames' mean squared deviation from orthonormal, or None."""
        if not self.config.orthogonality:
            return None
        total, count = None, 0
        for name in self._named(names):
            for gram in frame_grams(self.layers[name]):
                eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
                dev = (gram - eye).pow(2).sum()
                total = dev if total is None else total + dev
                count += gram.numel()
        return None if total is None else self.config.orthogonality * total / count


def frame_grams(module: TensorizedLayer) -> list[torch.Tensor]:
    """The Gram matrix of each frame factor of the layer (per group: [g, k, k]), the smaller side."""
    fmt, tz = module.format, module.tensorization
    grouped = module.shape.groups > 1
    terms = fmt.terms(tz)
    out = []
    for f in frames(fmt, tz):
        term = terms[f.factor]
        axes = [term.index(f.channel) + grouped, term.index(f.rank) + grouped]
        a = module.factors[f.factor].permute(*([0] if grouped else []), *axes)  # [(g,) channel, rank]
        out.append(a.mT @ a if a.shape[-1] <= a.shape[-2] else a @ a.mT)
    return out
