"""Clipping the singular values of a convolution, and projecting the result back onto the layer.

A convolution's singular values are those of its per-frequency matrices P(w) (fft.py). Clipping them
at c, P'(w) = U min(S, c) V^H, is the nearest operator (in Frobenius norm) whose norm is <= c, but its
kernel fills the whole grid; the layer has kh x kw taps. Projecting back keeps the taps' values on
the grid (for dilation, the dilated positions; where taps alias onto one grid point, each takes an
equal share of the change), which can raise the largest singular value again. The distance is
measured exactly: `error` is the operator norm of (projected - clipped), so by Weyl's inequality every
singular value after projection is <= c + error. Repeating clip and projection lowers sigma_max
(Sedghi et al. 2019, whose test asserts it; our tests too).

Factorised layers are clipped through their core (core.py): frames orthonormalised by QR, the small
core clipped, written back as frame = Q R' with the core's operands refitted (exactly, by assignment,
when one factor holds the whole core: `svd`, `tk`, `mtk`; by least squares warm-started from the
current factors otherwise: `cp`, `tt`). Formats without frames (`mcp`, `mtt`, `tr`, `mtr`) clip the
rebuilt kernel and refit every factor to it. The factors keep their format; `error` still measures
how far the result is from the clipped operator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..formats.layer import TensorizedLayer
from .core import CoreSplit, has_core, split_core
from .fft import Pair, _circular_kernel, _phases, pair

REFIT_ITERS = 60  # L-BFGS iterations of a least-squares refit (warm-started: the change is small)


@dataclass
class ClipResult:
    name: str
    path: str  # "kernel", "core" (exact write-back), "core-refit" or "kernel-refit"
    sigma_before: float  # of the circular operator on the grid clipped on (an upper bound for zero padding)
    error: float  # operator norm of (the layer after - the clipped operator); 0 when nothing was clipped
    changed: bool


def _unphase(k: torch.Tensor, ci: int, stride: Pair) -> torch.Tensor:
    """The inverse of fft._phases: [co, ci*sh*sw, H/sh, W/sw] -> [co, ci, H, W]."""
    co, _, hs, ws = k.shape
    sh, sw = stride
    return k.reshape(co, ci, sh, sw, hs, ws).permute(0, 1, 4, 2, 5, 3).reshape(co, ci, hs * sh, ws * sw)


def _spectrum(grid_kernel: torch.Tensor, stride: Pair, groups: int) -> torch.Tensor:
    """Per-frequency matrices of a kernel already on its grid: [g, H', F, co/g, ci*sh*sw] (half spectrum)."""
    co = grid_kernel.shape[0]
    k = _phases(grid_kernel, stride)
    p = torch.fft.rfft2(k)
    return p.reshape(groups, co // groups, k.shape[1], *p.shape[-2:]).permute(0, 3, 4, 1, 2)


def grid_norm(grid_kernel: torch.Tensor, stride=1, groups: int = 1) -> float:
    """Operator norm of the circular convolution by a kernel that already fills its grid [co, ci, H, W]."""
    if not grid_kernel.numel():
        return 0.0
    return float(torch.linalg.matrix_norm(_spectrum(grid_kernel, pair(stride), groups), ord=2).max())


def clip_grid_kernel(grid_kernel: torch.Tensor, c: float, stride=1, groups: int = 1, assign: float | None = None
                     ) -> tuple[torch.Tensor, float]:
    """The grid kernel whose circular operator has every singular value of `grid_kernel`'s clipped at
    c (same singular vectors), and the sigma_max before. Unchanged (the same tensor) when sigma_max <= c.
    With `assign`, every singular value is set to it instead (assign=1: the orthogonal polar factor)."""
    stride = pair(stride)
    co, ci, H, W = grid_kernel.shape
    p = _spectrum(grid_kernel, stride, groups)
    u, s, vh = torch.linalg.svd(p, full_matrices=False)
    before = float(s.max()) if s.numel() else 0.0
    if assign is None and before <= c:
        return grid_kernel, before
    s = torch.full_like(s, assign) if assign is not None else s.clamp(max=c)
    p = u @ (s.to(p.dtype)[..., None] * vh)
    hs, ws = H // stride[0], W // stride[1]
    p = p.permute(0, 3, 4, 1, 2).reshape(co, ci * stride[0] * stride[1], hs, p.shape[2])
    k = torch.fft.irfft2(p, s=(hs, ws))
    return _unphase(k, ci, stride), before


def _tap_positions(kh: int, kw: int, grid: Pair, dilation: Pair) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid row and column of every tap (p, q), and how many taps share its grid point."""
    rows = torch.tensor([(dilation[0] * p) % grid[0] for p in range(kh)])
    cols = torch.tensor([(dilation[1] * q) % grid[1] for q in range(kw)])
    flat = (rows[:, None] * grid[1] + cols[None, :]).reshape(-1)
    counts = torch.bincount(flat, minlength=grid[0] * grid[1])[flat].reshape(kh, kw)
    return rows, cols, counts


def project_to_taps(kernel: torch.Tensor, clipped_grid: torch.Tensor, dilation=1) -> torch.Tensor:
    """The kernel [co, ci, kh, kw] nearest to `kernel` whose placement on the grid agrees with
    `clipped_grid` at every grid point the taps reach (each point's change shared equally by its taps)."""
    kh, kw = kernel.shape[-2:]
    grid = tuple(clipped_grid.shape[-2:])
    rows, cols, counts = _tap_positions(kh, kw, grid, pair(dilation))
    placed = _circular_kernel(kernel, grid, pair(dilation))
    change = (clipped_grid - placed)[:, :, rows[:, None], cols[None, :]]
    return kernel + change / counts.to(kernel.dtype)


def _clip(kernel: torch.Tensor, grid: Pair, c: float, stride: Pair, dilation: Pair, groups: int = 1,
          assign: float | None = None) -> tuple[torch.Tensor, float, torch.Tensor | None]:
    """(the kernel projected back to its taps, sigma_max before, the clipped grid kernel or None when
    nothing needed clipping: then the kernel is returned as it is)."""
    placed = _circular_kernel(kernel, grid, dilation)
    clipped, before = clip_grid_kernel(placed, c, stride, groups, assign)
    if clipped is placed:
        return kernel, before, None
    return project_to_taps(kernel, clipped, dilation), before, clipped


def clip_kernel(kernel: torch.Tensor, grid, c: float, stride=1, dilation=1, groups: int = 1
                ) -> tuple[torch.Tensor, float, float]:
    """Clip the circular convolution by `kernel` on `grid` at c and project back to the taps: (the new
    kernel, sigma_max before, the projection's error). The kernel is returned unchanged when sigma_max <= c."""
    grid, stride, dilation = pair(grid), pair(stride), pair(dilation)
    new, before, clipped = _clip(kernel, grid, c, stride, dilation, groups)
    if clipped is None:
        return kernel, before, 0.0
    return new, before, grid_norm(_circular_kernel(new, grid, dilation) - clipped, stride, groups)


def refit(build: Callable[[list[torch.Tensor]], torch.Tensor], operands: list[torch.Tensor], target: torch.Tensor,
          iters: int = REFIT_ITERS) -> list[torch.Tensor]:
    """Least squares: the operands moved (from where they are) so that build(operands), reshaped like
    `target`, is as close to it as L-BFGS gets in `iters` steps."""
    ops = [o.detach().clone().requires_grad_(True) for o in operands]
    optimizer = torch.optim.LBFGS(ops, max_iter=iters, tolerance_grad=1e-14, tolerance_change=1e-16,
                                  line_search_fn="strong_wolfe")
    scale = target.norm().clamp_min(1e-30)

    def closure():
        optimizer.zero_grad()
        loss = ((build(ops).reshape(target.shape) - target) / scale).pow(2).sum()
        loss.backward()
        for o in ops:  # L-BFGS views the gradients flat; einsum's may be strided
            o.grad = o.grad.contiguous()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return [o.detach() for o in ops]


def _exact_write_back(split: CoreSplit, core: torch.Tensor, shapes: list[tuple[int, ...]]
                      ) -> list[torch.Tensor] | None:
    """Operands of the core einsum that give `core` exactly, frames' R as [I | 0], when one operand holds
    the whole core (its modes are the frames' ranks and the core's other modes); else None."""
    rest = [i for i in range(len(split.operands)) if i not in split.qs]
    if len(rest) != 1:
        return None
    index = rest[0]
    ins, out = split.spec.split("->")
    in_terms = ins.split(",")
    rank_of = {in_terms[i][0]: in_terms[i][1] for i in split.qs}  # a frame's k letter -> its rank letter
    out_as_ranks = "".join(rank_of.get(m, m) for m in out)
    if sorted(in_terms[index]) != sorted(out_as_ranks):
        return None
    ops = list(split.operands)
    for i in split.qs:
        ops[i] = torch.eye(*ops[i].shape, dtype=core.dtype)
    held = torch.einsum(f"{out_as_ranks}->{in_terms[index]}", core.reshape(split.sizes))
    ops[index] = held.new_zeros(shapes[index])
    ops[index][tuple(slice(0, n) for n in held.shape)] = held
    return ops


def clip_layer(name: str, module: nn.Module, grid, c: float, stride=1, dilation=1) -> ClipResult:
    """Clip the layer's singular values (of its circular operator on `grid`, with its stride and
    dilation) at c, in float64, and write the result back into the layer in place."""
    grid, stride, dilation = pair(grid), pair(stride), pair(dilation)
    with torch.no_grad():
        if isinstance(module, TensorizedLayer):
            if has_core(module.format, module.tensorization):
                return _clip_core(name, module, grid, c, stride, dilation)
            return _clip_rebuilt(name, module, grid, c, stride, dilation)
        linear = isinstance(module, nn.Linear)
        w = module.weight.detach().to(torch.float64)
        kernel = w[:, :, None, None] if linear else w
        new, before, error = clip_kernel(kernel, grid, c, stride, dilation, 1 if linear else module.groups)
        if new is not kernel:
            module.weight.copy_((new[:, :, 0, 0] if linear else new).to(module.weight.dtype))
        return ClipResult(name, "kernel", before, error, new is not kernel)


def _clip_core(name: str, module: TensorizedLayer, grid: Pair, c: float, stride: Pair, dilation: Pair) -> ClipResult:
    """Per group: frames Q R, the core clipped and written back as frames Q R' and core operands'."""
    fmt, shape, tz = module.format, module.shape, module.tensorization
    factors = [f.detach().to(torch.float64) for f in module.factors]
    per_group = [factors] if shape.groups == 1 else [[f[g] for f in factors] for g in range(shape.groups)]
    path, before, error, out = "core", 0.0, 0.0, []
    for fs in per_group:
        split = split_core(fmt, shape, tz, fs)
        core = split.core()
        new_core, b, clipped = _clip(core, grid, c, stride, dilation)
        before = max(before, b)
        if clipped is None:
            out.append(fs)
            continue
        ops = _exact_write_back(split, new_core, [tuple(f.shape) for f in fs])
        if ops is None:
            path = "core-refit"
            ops = refit(lambda o, split=split: torch.einsum(split.spec, *o), split.operands, new_core)
        achieved = split.core(ops)
        error = max(error, grid_norm(_circular_kernel(achieved, grid, dilation) - clipped, stride))
        new = []
        for i, op in enumerate(ops):  # a frame becomes Q R' in its factor's layout
            if i in split.qs:
                op = split.qs[i] @ op
                op = op if split.channel_first[i] else op.T
            new.append(op)
        out.append(new)
    changed = any(o is not fs for o, fs in zip(out, per_group, strict=True))
    if changed:
        _assign(module, out[0] if shape.groups == 1 else [torch.stack(fs) for fs in zip(*out, strict=True)])
    return ClipResult(name, path, before, error, changed)


def _clip_rebuilt(name: str, module: TensorizedLayer, grid: Pair, c: float, stride: Pair, dilation: Pair
                  ) -> ClipResult:
    """Formats without frames: the rebuilt kernel clipped, every factor refitted to it."""
    fmt, shape, tz = module.format, module.shape, module.tensorization
    kernel = module.dense_kernel().detach().to(torch.float64)
    new, before, clipped = _clip(kernel, grid, c, stride, dilation, shape.groups)
    if clipped is None:
        return ClipResult(name, "kernel-refit", before, 0.0, False)
    ops = refit(lambda o: fmt.rebuild(o, shape, tz), [f.detach().to(torch.float64) for f in module.factors], new)
    achieved = fmt.rebuild(ops, shape, tz)
    _assign(module, ops)
    return ClipResult(name, "kernel-refit", before,
                      grid_norm(_circular_kernel(achieved, grid, dilation) - clipped, stride, shape.groups), True)


def _assign(module: TensorizedLayer, factors: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, f in zip(module.factors, factors, strict=True):
            p.copy_(f.reshape(p.shape).to(p.dtype))
