"""Sampling-free probabilistic propagation: the mean and variance of every value of a network whose
selected weights are random (a QuantizedPosterior each), computed in one pass (dissertation 5.2.4).

The network is traced (torch.fx) and interpreted node by node with the rules of `rules.py`; a
tensorial layer goes through its conv_einsum plan, step by step (`einsum.moments`). Unsupported
operations are found before any work, by name.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from types import SimpleNamespace
from typing import NamedTuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..einsum.moments import expression_moments
from ..errors import UsageError, opt
from ..formats import TensorizedLayer
from ..formats.layer import TensorizedLinear
from ..inspect.graph import trace
from . import rules
from .activations import QuantizedActivation


class Gauss(NamedTuple):
    mean: torch.Tensor
    var: torch.Tensor | None  # None: deterministic


WeightMoments = Callable[[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]

_ELEMENTWISE_COPY = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze", "permute", "transpose"}
# shape queries and the assertions on them that traced code (timm's norm layers) carries
_SHAPE_ATTRIBUTES = {"ndim", "shape", "dtype", "device"}
_COMPARISONS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, torch._assert}
# elementwise nonlinearities other than ReLU: moments by quadrature (rules.elementwise)
_ACTIVATION_MODULES = (nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.ReLU6, nn.LeakyReLU,
                       nn.ELU, nn.Softplus, nn.Mish, nn.Hardtanh)
_ACTIVATION_FUNCTIONS = {F.silu, F.gelu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardswish, F.hardsigmoid,
                         F.relu6, F.leaky_relu, F.elu, F.softplus, F.mish, F.hardtanh}
_ACTIVATION_METHODS = {"sigmoid", "tanh"}
_MODULE_RULES = (TensorizedLayer, QuantizedActivation, nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d,
                 nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity,
                 nn.modules.dropout._DropoutNd, *_ACTIVATION_MODULES)
_FUNCTIONS = {operator.add, torch.add, operator.mul, torch.mul, F.relu, torch.relu, torch.flatten, F.max_pool2d,
              F.avg_pool2d, F.adaptive_avg_pool2d, F.pad, operator.getitem, torch.cat, F.dropout, torch.mean,
              F.batch_norm, F.linear, F.conv2d, *_ACTIVATION_FUNCTIONS, *_COMPARISONS}
_METHODS = _ELEMENTWISE_COPY | _ACTIVATION_METHODS | {"relu", "size", "dim", "mean"}
SUPPORTED = ("convolutions, linear and tensorial layers, eval-mode batch norm, ReLU (float or quantised) and other "
             "elementwise activations (SiLU, GELU, sigmoid, tanh, hard-swish, ...), max and average pooling, means, "
             "residual sums, products (squeeze-excite gates), concatenation, flatten and reshapes")


def _map(fn, *args, **kwargs):
    """Apply `fn` with every Gauss argument replaced by its mean, then by its variance."""
    def pick(v, which):
        if isinstance(v, Gauss):
            return v.mean if which == 0 else v.var
        if isinstance(v, (list, tuple)):
            return type(v)(pick(u, which) for u in v)
        return v
    mean = fn(*pick(args, 0), **pick(kwargs, 0))
    gauss_args = [a for a in args if isinstance(a, Gauss)]
    if all(a.var is None for a in gauss_args):
        return Gauss(mean, None)
    return Gauss(mean, fn(*pick(args, 1), **pick(kwargs, 1)))


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
            if node.name not in random:
                continue  # computed as in the forward pass
            why = None
            if node.op == "call_module":
                m = self.graph.get_submodule(node.target)
                if not isinstance(m, _MODULE_RULES):
                    why = f"layer {node.target!r} ({type(m).__name__})"
                elif isinstance(m, nn.MaxPool2d) and m.dilation not in (1, (1, 1)):
                    why = f"layer {node.target!r} (a dilated max pooling)"
            elif node.op == "call_function" and node.target is getattr:
                if node.args[1] not in _SHAPE_ATTRIBUTES:
                    why = f"attribute .{node.args[1]} (node {node.name})"
            elif node.op == "call_function" and node.target not in _FUNCTIONS and not _is_assert(node.target):
                why = f"operation {getattr(node.target, '__name__', node.target)!r} (node {node.name})"
            elif node.op == "call_method" and node.target not in _METHODS:
                why = f"method .{node.target}() (node {node.name})"
            if why:
                fed = random[node.name]
                hint = (f"; its input is random because of the quantised layer {fed}: leave the layers before it "
                        f"float with {opt('bqn_exclude')}" if fed != "the input" else "")
                raise UsageError(f"BQN cannot propagate moments through {why}: it handles {SUPPORTED}{hint}")

    def __call__(self, x: torch.Tensor, weight_moments: WeightMoments, x_var: torch.Tensor | None = None) -> Gauss:
        env: dict[str, object] = {}
        gm = self.graph
        random = self.sources[x_var is not None]

        def value(a):
            return torch.fx.node.map_arg(a, lambda n: env[n.name])

        for node in gm.graph.nodes:
            if node.op == "placeholder":
                env[node.name] = Gauss(x, x_var)
            elif node.op == "output":
                out = value(node.args)[0]
                return out if isinstance(out, Gauss) else Gauss(out, None)
            elif node.name not in random and self.quantised is not None:
                env[node.name] = _plain(gm, node, value(node.args), value(node.kwargs))
            elif self._pools_signs(node):
                env[node.name] = _binary_max_pool(gm, node, value(node.args), value(node.kwargs))
            elif node.op == "get_attr":  # a parameter used by a functional call (F.linear(x, self.weight))
                value_ = functools.reduce(getattr, node.target.split("."), gm)
                if isinstance(value_, nn.Parameter):
                    mean, var = weight_moments(node.target, value_)
                    value_ = Gauss(mean, var) if var is not None else mean
                env[node.name] = value_
            elif node.op == "call_module":
                m = gm.get_submodule(node.target)
                env[node.name] = self._module(node.target, m, value(node.args)[0], weight_moments)
            elif node.op == "call_function":
                env[node.name] = self._function(node.target, value(node.args), value(node.kwargs))
            elif node.op == "call_method":
                args, kwargs = value(node.args), value(node.kwargs)
                if node.target in ("size", "dim"):
                    env[node.name] = getattr(args[0].mean, node.target)(*args[1:], **kwargs)
                elif node.target == "relu":
                    env[node.name] = Gauss(*rules.relu(args[0]))
                elif node.target in _ACTIVATION_METHODS:
                    env[node.name] = Gauss(*rules.elementwise(lambda t, m=node.target: getattr(t, m)(), args[0]))
                elif node.target == "mean":
                    env[node.name] = Gauss(*rules.reduce_mean(args[0], *args[1:], **kwargs))
                else:
                    env[node.name] = _map(lambda t, *a, m=node.target, **k: getattr(t, m)(*a, **k), *args, **kwargs)
        raise RuntimeError("the traced graph has no output")

    def _pools_signs(self, node: torch.fx.Node) -> bool:
        """A max pooling whose input is a sign activation's output: a two-point variable, pooled exactly."""
        pools = (node.op == "call_function" and node.target is F.max_pool2d) or (
            node.op == "call_module" and isinstance(self.graph.get_submodule(node.target), nn.MaxPool2d))
        if not pools or not isinstance(node.args[0], torch.fx.Node) or node.args[0].op != "call_module":
            return False
        source = self.graph.get_submodule(node.args[0].target)
        return isinstance(source, QuantizedActivation) and source.bits == 1

    @staticmethod
    def _module(name: str, m: nn.Module, x: Gauss, weight_moments: WeightMoments) -> Gauss:
        if isinstance(m, TensorizedLayer):
            return _tensorized(name, m, x, weight_moments)
        if isinstance(m, nn.Conv2d):
            w = weight_moments(f"{name}.weight", m.weight)
            bias = m.bias[:, None, None] if m.bias is not None else None
            return Gauss(*rules.weighted(lambda a, k: m._conv_forward(a, k, None), x, w, bias))
        if isinstance(m, nn.Linear):
            w = weight_moments(f"{name}.weight", m.weight)
            return Gauss(*rules.weighted(F.linear, x, w, m.bias))
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            return Gauss(*rules.batch_norm(x, m))
        if isinstance(m, nn.ReLU):
            return Gauss(*rules.relu(x))
        if isinstance(m, QuantizedActivation):
            return Gauss(*m.moments(x))
        if isinstance(m, _ACTIVATION_MODULES):
            return Gauss(*rules.elementwise(m, x))
        if isinstance(m, nn.MaxPool2d):
            return Gauss(*rules.max_pool(x, m.kernel_size, m.stride, m.padding, m.ceil_mode))
        if isinstance(m, nn.AvgPool2d):
            return Gauss(*rules.avg_pool(x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                                         m.divisor_override))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return Gauss(*rules.adaptive_avg_pool(x, m.output_size))
        return _map(m, x)  # flatten, identity, eval-mode dropout: they copy entries

    @staticmethod
    def _function(fn, args, kwargs) -> object:
        if fn is getattr and isinstance(args[0], Gauss):
            return getattr(args[0].mean, args[1])
        if fn is F.linear and isinstance(args[0], Gauss):
            a = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
            return Gauss(*rules.weighted(F.linear, a["input"], _moments(a["weight"]), a["bias"]))
        if fn is F.conv2d and isinstance(args[0], Gauss):
            a = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                      {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
            bias = a["bias"][:, None, None] if a["bias"] is not None else None
            return Gauss(*rules.weighted(lambda x, w: F.conv2d(x, w, None, a["stride"], a["padding"], a["dilation"],
                                                               a["groups"]), a["input"], _moments(a["weight"]), bias))
        if fn is F.batch_norm and isinstance(args[0], Gauss):
            a = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
                                     "eps"), {"weight": None, "bias": None, "training": False, "momentum": 0.1,
                                              "eps": 1e-5})
            if a["training"]:
                raise UsageError("BQN propagates an eval-mode batch norm only (this one normalises by the batch)")
            return Gauss(*rules.batch_norm(a["input"], SimpleNamespace(**a)))
        if fn in (operator.add, torch.add) and len(args) == 2:
            a, b = args
            if isinstance(a, Gauss) and isinstance(b, Gauss):
                return Gauss(*rules.add(a, b))
            g, c = (a, b) if isinstance(a, Gauss) else (b, a)
            return Gauss(g.mean + c, g.var) if isinstance(g, Gauss) else a + b
        if fn in (operator.mul, torch.mul) and len(args) == 2:
            a, b = args
            g, c = (a, b) if isinstance(a, Gauss) else (b, a)
            if isinstance(g, Gauss) and isinstance(c, Gauss):
                return Gauss(*rules.product(g, c))
            if not isinstance(g, Gauss):
                return a * b
            return Gauss(g.mean * c, None if g.var is None else g.var * c * c)
        if fn in (F.relu, torch.relu):
            return Gauss(*rules.relu(args[0]))
        if fn in _ACTIVATION_FUNCTIONS and isinstance(args[0], Gauss):
            return Gauss(*rules.elementwise(lambda t: fn(t, *args[1:], **kwargs), args[0]))
        if fn is torch.mean and isinstance(args[0], Gauss):
            return Gauss(*rules.reduce_mean(*args, **kwargs))
        if fn is F.max_pool2d:
            a = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                     "return_indices"), {"stride": None, "padding": 0, "dilation": 1,
                                                         "ceil_mode": False, "return_indices": False})
            if a["dilation"] not in (1, (1, 1)) or a["return_indices"]:
                raise UsageError(f"BQN cannot propagate moments through a dilated max pooling or one returning "
                                 f"indices: it handles {SUPPORTED}")
            return Gauss(*rules.max_pool(a["input"], a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"]))
        if fn is F.avg_pool2d:
            a = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                     "divisor_override"), {"stride": None, "padding": 0, "ceil_mode": False,
                                                           "count_include_pad": True, "divisor_override": None})
            return Gauss(*rules.avg_pool(*a.values()))
        if fn is F.adaptive_avg_pool2d:
            a = _bind(args, kwargs, ("input", "output_size"), {})
            return Gauss(*rules.adaptive_avg_pool(a["input"], a["output_size"]))
        if fn is torch.cat:
            parts = args[0]
            if all(p.var is None for p in parts):
                return Gauss(torch.cat([p.mean for p in parts], *args[1:], **kwargs), None)
            var = [p.var if p.var is not None else torch.zeros_like(p.mean) for p in parts]
            return Gauss(torch.cat([p.mean for p in parts], *args[1:], **kwargs), torch.cat(var, *args[1:], **kwargs))
        if fn is F.pad and isinstance(args[0], Gauss):
            g = args[0]
            mean = F.pad(g.mean, *args[1:], **kwargs)
            if g.var is None:
                return Gauss(mean, None)
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            # constant pads have no variance; reflect/replicate/circular copy entries
            var = F.pad(g.var, args[1]) if mode == "constant" else F.pad(g.var, *args[1:], **kwargs)
            return Gauss(mean, var)
        if not any(isinstance(a, Gauss) for a in args):
            return fn(*args, **kwargs)
        return _map(fn, *args, **kwargs)  # selections, padding, flatten, eval-mode dropout


def _binary_max_pool(gm: torch.fx.GraphModule, node: torch.fx.Node, args, kwargs) -> Gauss:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        a = {"input": args[0], "kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
             "ceil_mode": m.ceil_mode}
    else:
        a = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"),
                  {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False})
    return Gauss(*rules.binary_max_pool(a["input"], a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"]))


def _plain(gm: torch.fx.GraphModule, node: torch.fx.Node, args, kwargs) -> object:
    """A node none of whose inputs is random, computed as the forward pass computes it."""
    def strip(v):
        if isinstance(v, Gauss):
            return v.mean
        if isinstance(v, (list, tuple)):
            return type(v)(strip(u) for u in v)
        return v
    args, kwargs = strip(args), {k: strip(v) for k, v in kwargs.items()}
    if node.op == "get_attr":
        return functools.reduce(getattr, node.target.split("."), gm)
    if node.op == "call_module":
        out = gm.get_submodule(node.target)(*args, **kwargs)
    elif node.op == "call_function":
        out = node.target(*args, **kwargs)
    else:
        out = getattr(args[0], node.target)(*args[1:], **kwargs)
    return Gauss(out, None) if isinstance(out, torch.Tensor) else out


def _moments(w) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (w.mean, w.var) if isinstance(w, Gauss) else (w, None)


def _is_assert(fn) -> bool:
    """torch._assert and the libraries' copies of it (timm's), which traced shape checks call."""
    return getattr(fn, "__name__", "") == "_assert"


def _bind(args, kwargs, names: tuple[str, ...], defaults: dict) -> dict:
    """A functional call's arguments by name, in `names` order, defaults filled in."""
    bound = {**defaults, **dict(zip(names, args, strict=False)), **kwargs}
    return {n: bound[n] for n in names}


def _tensorized(name: str, m: TensorizedLayer, x: Gauss, weight_moments: WeightMoments) -> Gauss:
    """A tensorial layer through its plan: the input's and every factor's moments, step by step."""
    lead = None
    if isinstance(m, TensorizedLinear):
        lead = x.mean.shape[:-1]
        x = _map(lambda t: t.reshape(-1, t.shape[-1], 1, 1), x)
    padding = m.padding
    if hasattr(m, "pads_explicitly") and m.pads_explicitly():
        pads = [v for lo_hi in reversed(m.explicit_pads()) for v in lo_hi]
        x = _map(lambda t: F.pad(t, pads, mode=m.padding_mode), x)
        padding = 0
    batch, _, h, w = x.mean.shape
    x = _map(lambda t: t.reshape(batch, *m.input_view, h, w), x)
    plan = m.plan_for_view(tuple(x.mean.shape), padding, backward=False)
    factors = [weight_moments(f"{name}.factors.{i}", p) for i, p in enumerate(m.factors)]
    mean, var = expression_moments(plan, (x.mean, x.var), *factors)
    shape = (batch, m.shape.out_channels, mean.shape[-2], mean.shape[-1])
    mean, var = mean.reshape(shape), (var.reshape(shape) if var is not None else None)
    if m.bias is not None:
        mean = mean + m.bias[:, None, None]
    if lead is not None:
        mean = mean.reshape(*lead, m.shape.out_channels)
        var = var.reshape(*lead, m.shape.out_channels) if var is not None else None
    return Gauss(mean, var)


def fixed_weights(name: str, p: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Weight moments with every weight fixed (propagation then equals the plain forward)."""
    return p, None
