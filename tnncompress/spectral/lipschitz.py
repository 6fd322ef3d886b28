"""Network Lipschitz constant (L2, eval mode): a certified upper bound and a measured lower bound.

Upper bound: the network is traced (torch.fx) and each value gets a bound on the Lipschitz constant of
the map from the input to it, node by node: a conv or linear layer multiplies by its sigma_max (exact,
or the zero-padding upper bound; a batch norm that only follows it is folded in, which is tighter than
multiplying the two), a sum of branches adds their bounds (residual blocks), a concatenation takes the
root of the sum of squares, element-wise activations multiply by their largest slope, pooling by the
bound of its window overlap (each operation's rule: ops/table.py). An operation without a rule stops the
bound, with its name (the layers' values are still reported).

Lower bound: the largest ||f(x) - f(y)|| / ||x - y|| over measured pairs: random pairs at several
distances, and pairs along the direction the Jacobian stretches most (power iteration on J^T J at random
points), so the ratio is close to the local maximum gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..inspect.graph import trace
from ..ops import OPERATIONS, Call, walk
from ..ops.gains import bn_scale
from .layers import SPECTRAL_LAYERS

__all__ = ["BoundUnavailable", "NetworkBound", "bn_after", "bn_scale", "measured_lower_bound", "upper_bound"]


class BoundUnavailable(Exception):
    """The network has an operation without a Lipschitz rule (the message names the node)."""


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


@dataclass
class NetworkBound:
    upper: float | None
    reason: str | None = None  # why there is no upper bound
    lower: float = 0.0
    pairs: int = 0


class _Lipschitz:
    """The walk's interpretation: each value's bound on the Lipschitz constant of the map from the input."""

    def __init__(self, sigma: dict[str, float], folded: set[str]):
        self.sigma, self.folded = sigma, folded

    def placeholder(self, node: torch.fx.Node) -> float:
        return 1.0

    def attribute(self, node: torch.fx.Node, value: object) -> float:
        return 0.0  # a constant

    def call(self, c: Call) -> float:
        rule = c.operation.rules.get("lipschitz") if c.operation is not None else None
        try:
            if rule is None:
                raise LookupError
            return rule(c, self)
        except LookupError:
            if c.module is not None:
                raise BoundUnavailable(f"no Lipschitz rule for {c.node.target} ({type(c.module).__name__})") from None
            if c.node.op == "call_method":
                raise BoundUnavailable(f"no Lipschitz rule for the method .{c.node.target}() at node "
                                       f"{c.node.name}") from None
            raise BoundUnavailable(f"no Lipschitz rule for {getattr(c.node.target, '__name__', c.node.target)} at "
                                   f"node {c.node.name}") from None


def upper_bound(model: nn.Module, layer_sigma: dict[str, float], input_size: tuple[int, ...],
                folded: dict[str, str] | None = None) -> float:
    """The bound by each operation's rule. `layer_sigma` holds each layer's sigma_max (upper bound), with
    the batch norm of `folded[layer]` already included. Raises BoundUnavailable naming a node without a
    rule."""
    gm = trace(model)
    with torch.no_grad():  # the shapes some rules need (adaptive pooling, means)
        ShapeProp(gm.eval()).propagate(torch.zeros(1, *input_size, dtype=next(model.parameters()).dtype))
    out = walk(gm, _Lipschitz(layer_sigma, set((folded or {}).values())), OPERATIONS)
    return out if not isinstance(out, (tuple, list)) else out[0]


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
