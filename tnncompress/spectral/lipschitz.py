"""Network Lipschitz constant (L2, eval mode): a certified upper bound and a measured lower bound.

Upper bound: the network is traced (torch.fx) and each value gets a bound on the Lipschitz constant of
the map from the input to it, node by node: a conv or linear layer multiplies by its sigma_max (exact,
or the zero-padding upper bound; a batch norm that only follows it is folded in, which is tighter than
multiplying the two), a sum of branches adds their bounds (residual blocks), a concatenation takes the
root of the sum of squares, element-wise activations multiply by their largest slope, pooling by the
bound of its window overlap. An operation without a rule stops the bound, with its name (the layers'
values are still reported).

Lower bound: the largest ||f(x) - f(y)|| / ||x - y|| over measured pairs: random pairs at several
distances, and pairs along the direction the Jacobian stretches most (power iteration on J^T J at random
points), so the ratio is close to the local maximum gain.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..inspect.graph import trace
from .layers import SPECTRAL_LAYERS

# largest slope of element-wise activations (GELU's and SiLU's maxima of the derivative, computed)
_SLOPES: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0, nn.ReLU6: lambda m: 1.0, nn.Tanh: lambda m: 1.0, nn.Hardtanh: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25, nn.LeakyReLU: lambda m: max(1.0, abs(m.negative_slope)),
    nn.ELU: lambda m: max(1.0, m.alpha), nn.GELU: lambda m: 1.1289, nn.SiLU: lambda m: 1.0998,
    nn.Hardswish: lambda m: 1.5, nn.Identity: lambda m: 1.0, nn.Flatten: lambda m: 1.0,
    nn.modules.dropout._DropoutNd: lambda m: 1.0,  # eval mode: the identity
}
_FUNCTION_SLOPES = {operator.neg: 1.0, torch.neg: 1.0, F.relu: 1.0, torch.relu: 1.0, F.relu6: 1.0, torch.tanh: 1.0,
                    torch.sigmoid: 0.25, F.gelu: 1.1289, F.silu: 1.0998, torch.flatten: 1.0, F.dropout: 1.0}
_SHAPE_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze", "relu", "clone"}


def _slope(m: nn.Module) -> float | None:
    for kind, slope in _SLOPES.items():
        if isinstance(m, kind):
            return slope(m)
    return None


class BoundUnavailable(Exception):
    """The network has an operation without a Lipschitz rule (the message names the node)."""


def bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """The per-channel gain of an eval-mode batch norm, gamma / sqrt(var + eps)."""
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    return gamma / torch.sqrt(bn.running_var + bn.eps)


def bn_after(model: nn.Module) -> dict[str, str]:
    """{layer name: batch-norm name} for every conv whose only use is a batch norm (fold candidates)."""
    try:
        gm = trace(model)
    except Exception:  # noqa: BLE001 - an untraceable model simply has no fold candidates
        return {}
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), SPECTRAL_LAYERS):
            users = list(node.users)
            if len(users) == 1 and users[0].op == "call_module" and isinstance(
                    gm.get_submodule(users[0].target), (nn.BatchNorm2d, nn.BatchNorm1d)):
                out[node.target] = users[0].target
    return out


def _window_gain(kernel, stride, dilation=1, average: bool = False) -> float:
    """Lipschitz bound of max (or average) pooling: sqrt(how many windows can cover one input), over
    the window size for an average (Cauchy-Schwarz)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    sh, sw = sh or kh, sw or kw
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    cover_h = kh if dh > 1 else math.ceil(kh / sh)
    cover_w = kw if dw > 1 else math.ceil(kw / sw)
    gain = math.sqrt(cover_h * cover_w)
    return gain / math.sqrt(kh * kw) if average else gain


def _adaptive_gain(in_hw, out_hw) -> float:
    """Adaptive average pooling: windows [floor(i n/o), ceil((i+1) n/o)); gain sqrt(max cover / min window)."""
    gains = []
    for n, o in zip(in_hw, out_hw, strict=True):
        o = o or n
        starts = [(i * n) // o for i in range(o)]
        ends = [-((-(i + 1) * n) // o) for i in range(o)]
        cover = max(sum(1 for s, e in zip(starts, ends, strict=True) if s <= j < e) for j in range(n))
        gains.append(cover / min(e - s for s, e in zip(starts, ends, strict=True)))
    return math.sqrt(gains[0] * gains[1])


def _selects(index) -> bool:
    """An index of slices, integers, None and Ellipsis only (no tensor: advanced indexing can repeat)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in items)


@dataclass
class NetworkBound:
    upper: float | None
    reason: str | None = None  # why there is no upper bound
    lower: float = 0.0
    pairs: int = 0


def upper_bound(model: nn.Module, layer_sigma: dict[str, float], input_size: tuple[int, ...],
                folded: dict[str, str] | None = None) -> float:
    """The bound by the rules above. `layer_sigma` holds each layer's sigma_max (upper bound), with the
    batch norm of `folded[layer]` already included. Raises BoundUnavailable naming a node without a rule."""
    gm = trace(model)
    folded = folded or {}
    skip_bn = set(folded.values())
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm.eval()).propagate(torch.zeros(1, *input_size, dtype=next(model.parameters()).dtype))

    def shape(node) -> tuple:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    bound: dict[str, float] = {}
    result = 0.0

    def of(arg) -> float:
        return bound[arg.name] if isinstance(arg, torch.fx.Node) else 0.0

    for node in gm.graph.nodes:
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if node.op == "placeholder":
            bound[node.name] = 1.0
        elif node.op == "output":
            out = node.args[0]
            result = of(out if isinstance(out, torch.fx.Node) else out[0])
        elif node.op == "get_attr":
            bound[node.name] = 0.0  # a constant
        elif node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, SPECTRAL_LAYERS):
                gain = layer_sigma[node.target]
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                gain = 1.0 if node.target in skip_bn else float(bn_scale(m).abs().max())
            elif _slope(m) is not None:
                gain = _slope(m)
            elif isinstance(m, nn.MaxPool2d):
                gain = _window_gain(m.kernel_size, m.stride, m.dilation)
            elif isinstance(m, nn.AvgPool2d):
                gain = _window_gain(m.kernel_size, m.stride, average=True)
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                gain = _adaptive_gain(shape(args[0])[-2:], shape(node)[-2:])
            else:
                raise BoundUnavailable(f"no Lipschitz rule for {node.target} ({type(m).__name__})")
            bound[node.name] = gain * of(args[0])
        elif node.op == "call_function":
            fn = node.target
            if fn in (operator.add, torch.add, operator.sub, torch.sub):
                bound[node.name] = sum(of(a) for a in args)
            elif fn in (operator.mul, torch.mul) and len(args) == 1:
                const = [a for a in node.args if not isinstance(a, torch.fx.Node)]
                bound[node.name] = abs(float(const[0])) * of(args[0])
            elif fn is torch.cat:
                bound[node.name] = math.sqrt(sum(of(a) ** 2 for a in node.args[0]))
            elif fn in _FUNCTION_SLOPES:
                bound[node.name] = _FUNCTION_SLOPES[fn] * of(args[0])
            elif fn in (F.max_pool2d, F.avg_pool2d, torch.max_pool2d):
                kernel = node.kwargs.get("kernel_size", node.args[1] if len(node.args) > 1 else None)
                stride = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else None) or kernel
                average = fn is F.avg_pool2d
                dilation = 1 if average else node.kwargs.get("dilation", node.args[4] if len(node.args) > 4 else 1)
                bound[node.name] = _window_gain(kernel, stride, dilation, average=average) * of(args[0])
            elif fn is F.adaptive_avg_pool2d:
                bound[node.name] = _adaptive_gain(shape(args[0])[-2:], shape(node)[-2:]) * of(args[0])
            elif fn is getattr:
                bound[node.name] = of(args[0])
            elif fn is operator.getitem and _selects(node.args[1]):
                bound[node.name] = of(args[0])  # basic indexing keeps a subset of the entries
            elif fn is F.pad and node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant") \
                    == "constant":
                bound[node.name] = of(args[0])  # constant padding adds entries that do not move
            else:
                raise BoundUnavailable(f"no Lipschitz rule for {getattr(fn, '__name__', fn)} at node {node.name}")
        elif node.op == "call_method":
            if node.target in _SHAPE_METHODS:
                bound[node.name] = of(args[0])
            elif node.target == "size":
                bound[node.name] = 0.0
            elif node.target == "mean":  # an average of n entries: gain 1/sqrt(n)
                before, after = shape(args[0]), shape(node)
                n = math.prod(before) // max(1, math.prod(after))
                bound[node.name] = of(args[0]) / math.sqrt(n)
            else:
                raise BoundUnavailable(f"no Lipschitz rule for the method .{node.target}() at node {node.name}")
    return result


@torch.no_grad()
def measured_lower_bound(model: nn.Module, input_size: tuple[int, ...], pairs: int = 32, power_iters: int = 10,
                         seed: int = 0) -> tuple[float, int]:
    """max ||f(x) - f(y)|| / ||x - y|| over measured pairs (see the module docstring); (ratio, pairs)."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    model = model.eval()

    def ratio(x, y) -> torch.Tensor:
        return ((model(x) - model(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1))

    best, count = 0.0, 0
    for scale in (1e-2, 1e-1, 1.0):
        x = torch.randn(pairs, *input_size, generator=g, dtype=dtype)
        y = x + scale * torch.randn(pairs, *input_size, generator=g, dtype=dtype)
        best = max(best, float(ratio(x, y).max()))
        count += pairs
    for _ in range(2):  # along the direction of largest local gain
        x = torch.randn(1, *input_size, generator=g, dtype=dtype)
        v = torch.randn(1, *input_size, generator=g, dtype=dtype)
        for _ in range(power_iters):
            v = v / v.norm()
            with torch.enable_grad():
                xv = x.clone().requires_grad_(True)
                _, jv = torch.func.jvp(model, (xv,), (v,))
                _, vjp = torch.func.vjp(model, xv)
                (v,) = vjp(jv)
        v = v / v.norm()
        for eps in (1e-3, 1e-2):
            best = max(best, float(ratio(x + eps * v, x).max()))
            count += 1
    return best, count
