"""The singular values of one layer as an operator on its input size, and which method gave them.

Paths (`LayerSpectrum.path`):
  "core"    a factorised layer with frame factors: the singular values of its core convolution
            (core.py), never forming the T x S kernel;
  "kernel"  any other layer: the (rebuilt) dense kernel.
Methods (`LayerSpectrum.method`): "fft" (per-frequency SVDs), "single" (one SVD: the same singular
values at every frequency, as for 1x1 kernels), "matrix" (a linear layer).

Exactness (`LayerSpectrum.exact`): a circular convolution whose output is n/s per axis, and a linear
layer, are exact. A circular padding larger than that repeats outputs: where every output position is
repeated c times (per axis), the values are exactly sqrt(c) times the circular operator's; otherwise
sqrt(most repeats) times them is an upper bound (and a padding too small for n/s outputs leaves some out:
the circular values bound them from above).
Zero padding (and "valid") is not circular: the values reported are those of the
circular operator on `padding_grid` (n + 2p rounded up to the stride), each an upper bound of the
corresponding zero-padded singular value, and `lower` is a power iteration on the true operator (its
adjoint from autograd), a lower bound of sigma_max. Reflect and replicate padding have no exact method
and are refused.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UsageError
from ..formats.layer import TensorizedConv2d, TensorizedLayer, TensorizedLinear
from ..limits import check
from .core import core_kernel, has_core
from .fft import Pair, conv_singular_values, fft_bytes, padding_grid, pair, tap_phases

SPECTRAL_LAYERS = (nn.Conv2d, nn.Linear, TensorizedConv2d, TensorizedLinear)
_NO_METHOD = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear)


class SpectralInputError(UsageError):
    """A layer or input size the exact methods cannot take (the layer's name is in the message)."""


class NoExactMethod(SpectralInputError):
    """A layer type (or padding mode) without an exact singular-value method."""


@dataclass
class LayerSpectrum:
    name: str
    kind: str  # "conv" or "linear"
    path: str  # "core" or "kernel"
    method: str  # "fft", "single" or "matrix"
    input_hw: Pair
    grid: Pair  # the circular grid the values are for
    exact: bool
    values: torch.Tensor  # descending, float64
    lower: float | None = None  # power-iteration lower bound of sigma_max (inexact layers)
    core: tuple[int, ...] | None = None  # the core kernel's shape on the "core" path
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def sigma_max(self) -> float:
        """Exact, or a certified upper bound (not exact)."""
        return float(self.values[0]) if self.values.numel() else 0.0

    def to_dict(self, top: int | None = None) -> dict:
        vals = self.values if top is None else self.values[:top]
        return {"name": self.name, "kind": self.kind, "path": self.path, "method": self.method,
                "input_hw": list(self.input_hw), "grid": list(self.grid), "exact": self.exact,
                "sigma_max": self.sigma_max, "sigma_max_lower": self.lower if not self.exact else self.sigma_max,
                "sigma_min": float(self.values[-1]) if self.values.numel() else 0.0,
                "count": int(self.values.numel()), "values": [float(v) for v in vals],
                "core": list(self.core) if self.core else None, "seconds": self.seconds, "notes": self.notes}


def _geometry(module: nn.Module) -> tuple[Pair, Pair, Pair | str, str, int]:
    """stride, dilation, padding, padding mode, groups of a conv-like module (a linear layer: 1x1)."""
    if isinstance(module, (nn.Linear, TensorizedLinear)):
        return (1, 1), (1, 1), (0, 0), "zeros", 1
    groups = module.groups if isinstance(module, nn.Conv2d) else module.shape.groups
    return pair(module.stride), pair(module.dilation), module.padding, module.padding_mode, groups


def _kernel_hw(module: nn.Module) -> Pair:
    if isinstance(module, TensorizedLayer):
        return module.shape.kh, module.shape.kw
    if isinstance(module, nn.Linear):
        return 1, 1
    return tuple(module.weight.shape[-2:])


def _pads(padding, kernel_hw: Pair, dilation: Pair) -> Pair:
    """Total padding per axis over 2 (as an int pair; "same" pads d(k-1) in all)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return tuple((d * (k - 1) + 1) // 2 for k, d in zip(kernel_hw, dilation, strict=True))
    return pair(padding)


def check_layer(name: str, module: nn.Module) -> None:
    """Refuse, in one line naming the layer, a layer without an exact method."""
    if isinstance(module, _NO_METHOD):
        raise NoExactMethod(f"layer {name} ({type(module).__name__}) has no exact singular-value method "
                            "(supported: Conv2d, Linear and their tensorised forms)")
    if isinstance(module, (nn.Conv2d, TensorizedConv2d)) and module.padding_mode not in ("zeros", "circular"):
        raise NoExactMethod(f"layer {name}: padding_mode {module.padding_mode!r} has no exact singular-value "
                            "method (zeros and circular do)")


def _circular_repeats(n: int, s: int, out: int, left: int) -> list[int]:
    """How many of the `out` outputs along an axis read each position of the stride-s circular operator on
    n points. Output i is the circular correlation at (i s - left) mod n: every position read once when
    out = n / s, some twice or more when the padding exceeds what n / s outputs need, some never when it
    falls short."""
    counts = [0] * (n // s)
    for i in range(out):
        counts[((i * s - left) % n) // s] += 1
    return counts


def _grid(name: str, module: nn.Module, input_hw: Pair) -> tuple[Pair, bool, float]:
    """The circular grid the values are computed on, whether they are exact there, and the factor that
    scales the grid's values to the layer's (> 1 when a circular padding repeats outputs)."""
    stride, dilation, padding, mode, _ = _geometry(module)
    kernel_hw = _kernel_hw(module)
    if isinstance(module, (nn.Linear, TensorizedLinear)):
        return (1, 1), True, 1.0
    for n, s, axis in zip(input_hw, stride, ("height", "width"), strict=True):
        if n % s:
            raise SpectralInputError(f"layer {name}: input {axis} {n} is not divisible by its stride {s}; "
                             "choose an input size whose feature maps divide (--input-size)")
    pads = _pads(padding, kernel_hw, dilation)
    if mode == "circular":
        # The operator is S C: C the stride-s circular operator on the n x n grid, S picking (and maybe
        # repeating) its outputs, S^T S = diag(repeats). So A^T A = C^T D C: exactly c C^T C when every
        # position is read c times, else between min(c) and max(c) times it (each singular value too).
        # PyTorch's "same" pads d(k-1) in all, the smaller half before.
        left = [d * (k - 1) // 2 for k, d in zip(kernel_hw, dilation, strict=True)] if padding == "same" else \
            [0, 0] if padding == "valid" else list(pads)
        total = [d * (k - 1) for k, d in zip(kernel_hw, dilation, strict=True)] if padding == "same" else \
            [2 * p for p in pads]
        repeats = [_circular_repeats(n, s, (n + t - d * (k - 1) - 1) // s + 1, lo) for n, s, t, d, k, lo in
                   zip(input_hw, stride, total, dilation, kernel_hw, left, strict=True)]
        exact = all(len(set(r)) == 1 and r[0] > 0 for r in repeats)
        return tuple(input_hw), exact, math.sqrt(max(repeats[0]) * max(repeats[1]))
    if all(p == 0 and d * (k - 1) == 0 for p, d, k in zip(pads, dilation, kernel_hw, strict=True)):
        return tuple(input_hw), True, 1.0  # a 1x1 kernel without padding never wraps: circular is exact
    return padding_grid(input_hw, pads, stride), False, 1.0


def _kernels(module: nn.Module, dtype, out_scale) -> tuple[str, list[torch.Tensor], int]:
    """("core" | "kernel", one kernel per group (core) or [the whole kernel], groups of that kernel)."""
    if isinstance(module, TensorizedLayer) and has_core(module.format, module.tensorization):
        shape, groups = module.shape, module.shape.groups
        factors = [f.detach().to(dtype) for f in module.factors]
        per_group = [factors] if groups == 1 else [[f[g] for f in factors] for g in range(groups)]
        scales = [None] * groups if out_scale is None else list(out_scale.to(dtype).reshape(groups, -1))
        try:
            return "core", [core_kernel(module.format, shape, module.tensorization, fs, sc)
                            for fs, sc in zip(per_group, scales, strict=True)], 1
        except ValueError:  # an output scale the frames cannot carry: the kernel path below
            pass
    if isinstance(module, TensorizedLayer):
        kernel, groups = module.dense_kernel().detach().to(dtype), module.shape.groups
    elif isinstance(module, nn.Linear):
        kernel, groups = module.weight.detach().to(dtype)[:, :, None, None], 1
    else:
        kernel, groups = module.weight.detach().to(dtype), module.groups
    if out_scale is not None:
        kernel = kernel * out_scale.to(dtype)[:, None, None, None]
    return "kernel", [kernel], groups


def linear_part(module: nn.Module, out_scale: torch.Tensor | None = None):
    """x -> the layer's output without its bias (times `out_scale` per channel)."""
    def apply(x):
        y = module(x) - module(torch.zeros_like(x[:1]))
        return y if out_scale is None else y * out_scale.reshape(-1, *([1] * (y.dim() - 2)))
    return apply


def power_iteration(apply, x: torch.Tensor, iters: int = 50) -> tuple[float, torch.Tensor]:
    """Lower bound of the operator norm of the linear map `apply` by power iteration on A^T A, the
    adjoint taken by autograd (so stride, padding and output size are always consistent). Returns the
    last Rayleigh quotient ||A x|| / ||x|| and x (to warm-start the next call)."""
    with torch.enable_grad():
        for _ in range(iters):
            x = (x / x.norm()).detach().requires_grad_(True)
            y = apply(x)
            (x,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
    x = x.detach()
    with torch.no_grad():
        return float(apply(x / x.norm()).norm()), x


def layer_spectrum(name: str, module: nn.Module, input_hw: Pair, dtype=torch.float64,
                   out_scale: torch.Tensor | None = None, power_iters: int = 50, seed: int = 0) -> LayerSpectrum:
    """The singular values of `module` (a conv or linear layer, plain or tensorised) applied to
    [*, C, H, W] inputs of spatial size `input_hw`, its output channels scaled by `out_scale` (a batch
    norm folded in) when given."""
    check_layer(name, module)
    t0 = time.perf_counter()
    stride, dilation, _, _, _ = _geometry(module)
    grid, exact, repeats = _grid(name, module, pair(input_hw))
    path, kernels, groups = _kernels(module, dtype, out_scale)
    _check_memory(name, kernels, grid, stride, dilation, dtype)
    linear = isinstance(module, (nn.Linear, TensorizedLinear))
    values = torch.cat([conv_singular_values(k, grid, stride, dilation, groups) for k in kernels])
    values = values.sort(descending=True).values.to(torch.float64).cpu() * repeats
    full = _operator_rank_bound(module, grid, stride, groups if path == "kernel" else _groups(module))
    if values.numel() < full:  # the core path gives the nonzero ones; the rest are zeros
        values = torch.cat([values, values.new_zeros(full - values.numel())])
    if linear:
        method = "matrix"
    else:
        method = "single" if tap_phases(*kernels[0].shape[-2:], grid, stride, dilation) is not None else "fft"
    spec = LayerSpectrum(name, "linear" if linear else "conv", path, method, pair(input_hw), grid, exact, values,
                         core=tuple(kernels[0].shape) if path == "core" else None)
    if not exact:
        param = next(module.parameters())
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, _in_channels(module), *input_hw, generator=g).to(param)
        spec.lower, _ = power_iteration(linear_part(module, out_scale), x, power_iters)
        why = "circular padding repeating or leaving out outputs" if module.padding_mode == "circular" else \
            "zero padding"
        spec.notes.append(f"{why}: sigma_max in [{spec.lower:.6g}, {spec.sigma_max:.6g}] (power iteration, "
                          f"circular on {grid[0]}x{grid[1]})")
    spec.seconds = time.perf_counter() - t0
    return spec


def _check_memory(name: str, kernels: list[torch.Tensor], grid: Pair, stride: Pair, dilation: Pair, dtype) -> None:
    itemsize = torch.empty(0, dtype=dtype).element_size()
    need = sum(fft_bytes(k.shape, grid, stride, dilation) for k in kernels) * itemsize
    check("spectrum_bytes", need, f"layer {name}: the exact singular values of its {tuple(kernels[0].shape)} kernel "
          f"on a {grid[0]}x{grid[1]} grid need about {need / 2**30:.1f} GiB")


def check_memory(name: str, module: nn.Module, input_hw: Pair, dtype=torch.float64) -> None:
    """Refuse (LimitError, with the numbers) a layer whose exact singular values would need more memory
    than the spectrum_bytes limit, before any of it is allocated."""
    check_layer(name, module)
    stride, dilation, _, _, _ = _geometry(module)
    grid = _grid(name, module, pair(input_hw))[0]
    _check_memory(name, _kernels(module, dtype, None)[1], grid, stride, dilation, dtype)


def _groups(module: nn.Module) -> int:
    return _geometry(module)[4]


def _operator_rank_bound(module: nn.Module, grid: Pair, stride: Pair, groups: int) -> int:
    """How many singular values the operator has: frequencies x groups x min(out, in x phases) per group."""
    out = module.out_features if isinstance(module, nn.Linear) else (
        module.shape.out_channels if isinstance(module, TensorizedLayer) else module.out_channels)
    phases = stride[0] * stride[1]
    per_group = min(out // groups, _in_channels(module) // groups * phases)
    return (grid[0] // stride[0]) * (grid[1] // stride[1]) * groups * per_group


def _in_channels(module: nn.Module) -> int:
    if isinstance(module, TensorizedLayer):
        return module.shape.in_channels * module.shape.groups
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def dense_operator(module: nn.Module, input_hw: Pair, dtype=torch.float64) -> torch.Tensor:
    """The layer's linear part as an explicit matrix [out numel, in numel] (by applying it to every basis
    vector): the brute-force reference for tests, only for small layers."""
    c = _in_channels(module)
    linear = isinstance(module, (nn.Linear, TensorizedLinear))
    n = c if linear else c * input_hw[0] * input_hw[1]
    basis = torch.eye(n, dtype=dtype) if linear else torch.eye(n, dtype=dtype).reshape(n, c, *input_hw)
    with torch.no_grad():
        out = linear_part(module)(basis)
    return out.reshape(n, -1).T


