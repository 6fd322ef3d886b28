"""Sampling-free probabilistic propagation: the mean and variance of every value of a network whose
selected weights are random (a QuantizedPosterior each), computed in one pass (dissertation 5.2.4).

The network is traced (torch.fx) and walked node by node (ops/walk.py) with each operation's "moments"
rule (ops/table.py); a tensorial layer goes through its conv_einsum plan, step by step
(`einsum.moments`). Unsupported operations are found before any work, by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError, opt
from ..formats import TensorizedLayer
from ..inspect.graph import trace
from ..ops import OPERATIONS, SHAPE_ATTRIBUTES, Call, Gauss, Unsupported, plain, plain_or_copied, walk
from ..ops import moments as rules
from .activations import QuantizedActivation

__all__ = ["SUPPORTED", "Gauss", "Propagator", "WeightMoments", "fixed_weights"]

WeightMoments = Callable[[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
SUPPORTED = ("convolutions, linear and tensorial layers, eval-mode batch norm, ReLU (float or quantised) and other "
             "elementwise activations (SiLU, GELU, sigmoid, tanh, hard-swish, ...), max and average pooling, means, "
             "residual sums, products (squeeze-excite gates), concatenation, flatten and reshapes")


class Propagator:
    """Moments of `model`'s output for deterministic inputs; the weights' moments come from
    `weight_moments(parameter name, parameter)`.

    `quantised` names the parameters that carry a posterior (None: every conv, linear and tensorial
    layer's). A value that none of them (nor a random input) reaches is deterministic: its operation
    runs as in the plain forward pass, so it needs no moment rule. An operation without a rule that a
    random value reaches is refused here, before any work, by name."""

    def __init__(self, model: nn.Module, quantised: set[str] | None = None):
        self.graph = trace(model)
        self.model = model
        self.quantised = quantised
        # {input random?: {node name: the quantised layer (or "the input") that makes it random}}
        self.sources = {random_input: self._sources(random_input) for random_input in (False, True)}
        self._check()

    def _holds_posterior(self, node: torch.fx.Node) -> bool:
        if node.op == "get_attr":
            names = [node.target]
        elif node.op == "call_module":
            m = self.graph.get_submodule(node.target)
            if self.quantised is None:
                return isinstance(m, (TensorizedLayer, nn.Conv2d, nn.Linear))
            names = [f"{node.target}.{n}" for n, _ in m.named_parameters()]
        else:
            return False
        if self.quantised is None:
            return node.op == "get_attr"
        return any(n in self.quantised for n in names)

    def _sources(self, random_input: bool) -> dict[str, str]:
        sources: dict[str, str] = {}
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                if random_input:
                    sources[node.name] = "the input"
            elif self._holds_posterior(node):
                sources[node.name] = f"{node.target!r}"
            else:
                upstream = [sources[a.name] for a in node.all_input_nodes if a.name in sources]
                if upstream:
                    sources[node.name] = upstream[0]
        return sources

    def _check(self) -> None:
        random = self.sources[True] if self.quantised is None else self.sources[False]
        for node in self.graph.graph.nodes:
            if node.name not in random or node.op not in ("call_module", "call_function", "call_method"):
                continue  # computed as in the forward pass
            why = None
            op = OPERATIONS.of(node, self.graph)
            if node.op == "call_function" and node.target is getattr:
                if node.args[1] not in SHAPE_ATTRIBUTES:
                    why = f"attribute .{node.args[1]} (node {node.name})"
            elif op is None or "moments" not in op.rules:
                why = Call(node, self.graph, node.args, node.kwargs, op).describe()
            elif node.op == "call_module" and getattr(self.graph.get_submodule(node.target), "dilation", 1) not in (
                    1, (1, 1)) and isinstance(self.graph.get_submodule(node.target), nn.MaxPool2d):
                why = f"layer {node.target!r} (a dilated max pooling)"
            if why:
                fed = random[node.name]
                hint = (f"; its input is random because of the quantised layer {fed}: leave the layers before it "
                        f"float with {opt('bqn_exclude')}" if fed != "the input" else "")
                raise UsageError(f"BQN cannot propagate moments through {why}: it handles {SUPPORTED}{hint}")

    def __call__(self, x: torch.Tensor, weight_moments: WeightMoments, x_var: torch.Tensor | None = None) -> Gauss:
        out = walk(self.graph, _Moments(self, weight_moments, self.sources[x_var is not None], x, x_var), OPERATIONS)
        return out if isinstance(out, Gauss) else Gauss(out, None)

    def pools_signs(self, node: torch.fx.Node) -> bool:
        """A max pooling whose input is a sign activation's output: a two-point variable, pooled exactly."""
        pools = (node.op == "call_function" and node.target is F.max_pool2d) or (
            node.op == "call_module" and isinstance(self.graph.get_submodule(node.target), nn.MaxPool2d))
        if not pools or not isinstance(node.args[0], torch.fx.Node) or node.args[0].op != "call_module":
            return False
        source = self.graph.get_submodule(node.args[0].target)
        return isinstance(source, QuantizedActivation) and source.bits == 1


class _Moments:
    """The walk's interpretation: every value's mean and variance (a Gauss; plain values stay plain)."""

    def __init__(self, propagator: Propagator, weight_moments: WeightMoments, random: dict[str, str],
                 x: torch.Tensor, x_var: torch.Tensor | None):
        self.propagator, self.weight_moments, self.random, self.input = propagator, weight_moments, random, (x, x_var)

    def placeholder(self, node: torch.fx.Node) -> Gauss:
        return Gauss(*self.input)

    def attribute(self, node: torch.fx.Node, value: object) -> object:
        """A parameter used by a functional call (F.linear(x, self.weight)) carries its moments."""
        if self.propagator.quantised is not None and node.name not in self.random:
            return value
        if isinstance(value, nn.Parameter):
            mean, var = self.weight_moments(node.target, value)
            return Gauss(mean, var) if var is not None else mean
        return value

    def call(self, c: Call) -> object:
        if c.node.name not in self.random and self.propagator.quantised is not None:
            return _plain(c)  # no random value reaches it: computed as in the forward pass
        if self.propagator.pools_signs(c.node):
            return _binary_max_pool(c)
        rule = c.operation.rules.get("moments") if c.operation is not None else None
        if rule is None:  # only where no random value reaches it (checked): selections, shape arithmetic
            return plain_or_copied(c, self)
        try:
            return rule(c, self)
        except Unsupported as exc:
            raise UsageError(f"BQN cannot propagate moments through {exc}: it handles {SUPPORTED}") from None


def _strip(v):
    if isinstance(v, Gauss):
        return v.mean
    if isinstance(v, (list, tuple)):
        return type(v)(_strip(u) for u in v)
    return v


def _plain(c: Call) -> object:
    """A node none of whose inputs is random, computed as the forward pass computes it."""
    out = plain(Call(c.node, c.gm, _strip(c.args), {k: _strip(v) for k, v in c.kwargs.items()}, c.operation))
    return Gauss(out, None) if isinstance(out, torch.Tensor) else out


def _binary_max_pool(c: Call) -> Gauss:
    a = c.a
    return Gauss(*rules.binary_max_pool(a.input, a.kernel_size, a.stride, a.padding, a.ceil_mode))


def fixed_weights(name: str, p: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Weight moments with every weight fixed (propagation then equals the plain forward)."""
    return p, None
