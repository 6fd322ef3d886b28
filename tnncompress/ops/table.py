"""Every operation a traced model may hold that the analyses understand, each declared once with its
rule for every interpretation: "lipschitz" (the output's Lipschitz bound from its inputs' bounds,
spectral/lipschitz.py) and "moments" (the output's mean and variance from its inputs', mean field,
bayes/propagate.py). An operation without a rule for an interpretation is one it refuses, by name.

Rules are functions of the `Call` (its arguments by name in `c.a`) and of the interpretation walking
the graph (`it`: the batch norms folded into the layer before them; the weights' moments). To teach the
analyses a new operation, add one `Operation` here (or next to the module that defines it, as
bayes/activations.py does for its quantisers).
"""

from __future__ import annotations

import functools
import math
import operator
from types import SimpleNamespace

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..einsum.moments import expression_moments
from ..formats import TensorizedLayer
from ..formats.layer import TensorizedLinear
from . import gains
from . import moments as m
from .moments import Gauss, copied
from .walk import Operation, Operations

OPERATIONS = Operations()
add = OPERATIONS.add


class Unsupported(Exception):
    """The operation has a rule, but not for these arguments (a dilated max pooling's moments)."""


def _unavailable(c):
    """No rule for these arguments (the interpretation names the node)."""
    raise LookupError(c.describe())


def _bound(c, i: int = 0) -> float:
    """The Lipschitz bound of positional argument `i` (0 for a constant)."""
    return c.args[i] if c.from_node(i) else 0.0


def _scaled(gain):
    """A Lipschitz rule: the operation's gain (a function of the call) times its input's bound."""
    return lambda c, it: gain(c) * c.a.input


def _same_bound(c, it) -> float:
    return c.a.input


def plain_or_copied(c, it):
    """An operation on values none of which is random runs as in the forward pass; one that copies
    entries of a random value copies its mean and variance."""
    if not any(isinstance(v, Gauss) for v in c.args):
        return plain(c)
    return _copy_moments(c, it)


def plain(c):
    """The node computed as the forward pass computes it."""
    if c.module is not None:
        return c.module(*c.args, **c.kwargs)
    if c.node.op == "call_method":
        return getattr(c.args[0], c.node.target)(*c.args[1:], **c.kwargs)
    return c.node.target(*c.args, **c.kwargs)


def _copy_moments(c, it):
    if c.module is not None:
        return copied(c.module, c.args[0])
    if c.node.op == "call_method":
        return copied(lambda t, *a, **k: getattr(t, c.node.target)(*a, **k), *c.args, **c.kwargs)
    return copied(c.node.target, *c.args, **c.kwargs)


# --- layers with weights (their Lipschitz gain is the layer's sigma_max, which the bound is given) ------

def _given_sigma(c, it) -> float:
    if c.module is None:  # a functional convolution's weight is not a layer the spectrum measured
        return _unavailable(c)
    return it.sigma[c.node.target] * c.a.input


def _gauss_input(rule):
    """A rule for a random input; a functional call on a deterministic one runs as in the forward pass."""
    def checked(c, it):
        if c.module is None and not isinstance(c.args[0], Gauss):
            return plain_or_copied(c, it)
        return rule(c, it)
    return checked


def _conv_moments(c, it):
    if c.module is not None:
        mod = c.module
        w = it.weight_moments(f"{c.node.target}.weight", mod.weight)
        bias = mod.bias[:, None, None] if mod.bias is not None else None
        return Gauss(*m.weighted(lambda a, k: mod._conv_forward(a, k, None), c.a.input, w, bias))
    a = c.a
    bias = a.bias[:, None, None] if a.bias is not None else None
    return Gauss(*m.weighted(lambda x, w: F.conv2d(x, w, None, a.stride, a.padding, a.dilation, a.groups),
                             a.input, _weight(a.weight), bias))


def _linear_moments(c, it):
    if c.module is not None:
        w = it.weight_moments(f"{c.node.target}.weight", c.module.weight)
        return Gauss(*m.weighted(F.linear, c.a.input, w, c.module.bias))
    return Gauss(*m.weighted(F.linear, c.a.input, _weight(c.a.weight), c.a.bias))


def _weight(w) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (w.mean, w.var) if isinstance(w, Gauss) else (w, None)


def _tensorized_moments(c, it) -> Gauss:
    """A tensorial layer through its plan: the input's and every factor's moments, step by step."""
    layer, x, name = c.module, c.a.input, c.node.target
    lead = None
    if isinstance(layer, TensorizedLinear):
        lead = x.mean.shape[:-1]
        x = copied(lambda t: t.reshape(-1, t.shape[-1], 1, 1), x)
    padding = layer.padding
    if getattr(layer, "pads_explicitly", None) is not None and layer.pads_explicitly():
        pads = [v for lo_hi in reversed(layer.explicit_pads()) for v in lo_hi]
        x = copied(lambda t: F.pad(t, pads, mode=layer.padding_mode), x)
        padding = 0
    batch, _, h, w = x.mean.shape
    x = copied(lambda t: t.reshape(batch, *layer.input_view, h, w), x)
    plan = layer.plan_for_view(tuple(x.mean.shape), padding, backward=False)
    factors = [it.weight_moments(f"{name}.factors.{i}", p) for i, p in enumerate(layer.factors)]
    mean, var = expression_moments(plan, (x.mean, x.var), *factors)
    shape = (batch, layer.shape.out_channels, mean.shape[-2], mean.shape[-1])
    mean, var = mean.reshape(shape), (var.reshape(shape) if var is not None else None)
    if layer.bias is not None:
        mean = mean + layer.bias[:, None, None]
    if lead is not None:
        mean = mean.reshape(*lead, layer.shape.out_channels)
        var = var.reshape(*lead, layer.shape.out_channels) if var is not None else None
    return Gauss(mean, var)


CONV = add(Operation("convolution", modules=(nn.Conv2d,), functions=(F.conv2d,),
                     signature=("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                     defaults={"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
                     rules={"lipschitz": _given_sigma, "moments": _gauss_input(_conv_moments)}))
LINEAR = add(Operation("linear", modules=(nn.Linear,), functions=(F.linear,), signature=("input", "weight", "bias"),
                       defaults={"bias": None},
                       rules={"lipschitz": _given_sigma, "moments": _gauss_input(_linear_moments)}))
TENSORIZED = add(Operation("tensorial layer", modules=(TensorizedLayer,),
                           rules={"lipschitz": _given_sigma, "moments": _tensorized_moments}))


# --- normalisation ---------------------------------------------------------------------------------------

def _bn_lipschitz(c, it) -> float:
    if c.module is None:  # F.batch_norm (timm's norm-and-activation layers): its tensors are attributes
        if c.a.training or not c.from_node(0):
            return _unavailable(c)
        norm = SimpleNamespace(**{k: _attribute(c, v) for k, v in _bound_nodes(c).items()})
        if norm.running_var is None or not isinstance(norm.running_var, torch.Tensor):
            return _unavailable(c)
        return float(gains.bn_scale(norm).abs().max()) * c.a.input
    folded = c.node.target in it.folded  # its gain is in the layer's sigma
    return (1.0 if folded else float(gains.bn_scale(c.module).abs().max())) * c.a.input


def _bound_nodes(c) -> dict:
    """The functional batch norm's running_var, weight and eps, as the graph gives them (nodes or values)."""
    given = {**dict(zip(BATCH_NORM_ARGS, c.node.args, strict=False)), **c.node.kwargs}
    return {"running_var": given.get("running_var"), "weight": given.get("weight"), "eps": c.a.eps}


def _attribute(c, v):
    """A get_attr node's tensor (a parameter or buffer of the traced module); other values as they are."""
    if isinstance(v, torch.fx.Node):
        return functools.reduce(getattr, v.target.split("."), c.gm) if v.op == "get_attr" else None
    return v


def _bn_moments(c, it):
    if c.module is not None:
        return Gauss(*m.batch_norm(c.a.input, c.module))
    a = c.a
    if a.training:
        raise Unsupported("a batch norm in training mode (it normalises by the batch)")
    return Gauss(*m.batch_norm(a.input, SimpleNamespace(**vars(a))))


BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
BATCH_NORM = add(Operation(
    "batch norm", modules=(nn.BatchNorm2d, nn.BatchNorm1d), functions=(F.batch_norm,), signature=BATCH_NORM_ARGS,
    defaults={"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5},
    rules={"lipschitz": _bn_lipschitz, "moments": _gauss_input(_bn_moments)}))




# --- element-wise activations ------------------------------------------------------------------------------

def _relu_moments(c, it):
    return Gauss(*m.relu(c.args[0]))


RELU = add(Operation("relu", modules=(nn.ReLU,), functions=(F.relu, torch.relu), methods=("relu",),
                     rules={"lipschitz": _same_bound, "moments": _relu_moments}))


def _quadrature(c, it):
    """Any other element-wise nonlinearity: its moments by Gauss-Hermite quadrature."""
    if c.module is not None:
        return Gauss(*m.elementwise(c.module, c.args[0]))
    if c.node.op == "call_method":
        return Gauss(*m.elementwise(lambda t: getattr(t, c.node.target)(), c.args[0]))
    if not isinstance(c.args[0], Gauss):
        return c.node.target(*c.args, **c.kwargs)
    return Gauss(*m.elementwise(lambda t: c.node.target(t, *c.args[1:], **c.kwargs), c.args[0]))


def activation(name: str, slope, modules=(), functions=(), methods=(), signature=("input",), defaults=None,
               attributes=None) -> Operation:
    """An element-wise activation whose derivative is at most `slope` (a number, or a function of the
    call's arguments)."""
    gain = slope if callable(slope) else (lambda a: slope)
    return add(Operation(name, modules, functions, methods, signature, defaults or {}, attributes,
                         {"lipschitz": lambda c, it: gain(c.a) * c.a.input, "moments": _quadrature}))


activation("relu6", 1.0, (nn.ReLU6,), (F.relu6,))
activation("tanh", 1.0, (nn.Tanh,), (torch.tanh, F.tanh), ("tanh",))
activation("hardtanh", 1.0, (nn.Hardtanh,), (F.hardtanh,))
activation("sigmoid", 0.25, (nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid",))
activation("hardsigmoid", 0.1667, (nn.Hardsigmoid,), (F.hardsigmoid,))
activation("gelu", gains.GELU, (nn.GELU,), (F.gelu,))
activation("silu", gains.SILU, (nn.SiLU,), (F.silu,))
activation("mish", gains.MISH, (nn.Mish,), (F.mish,))
activation("hardswish", 1.5, (nn.Hardswish,), (F.hardswish,))
activation("softplus", 1.0, (nn.Softplus,), (F.softplus,))
activation("leaky relu", lambda a: max(1.0, abs(a.negative_slope)), (nn.LeakyReLU,), (F.leaky_relu,),
           signature=("input", "negative_slope"), defaults={"negative_slope": 0.01},
           attributes=lambda mod: {"negative_slope": mod.negative_slope})
activation("elu", lambda a: max(1.0, a.alpha), (nn.ELU,), (F.elu,), signature=("input", "alpha"),
           defaults={"alpha": 1.0}, attributes=lambda mod: {"alpha": mod.alpha})


# --- pooling and means -------------------------------------------------------------------------------------

def _pool_attributes(mod) -> dict:
    return {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
            "dilation": getattr(mod, "dilation", 1), "ceil_mode": mod.ceil_mode}


def _max_pool_moments(c, it):
    a = c.a
    if a.dilation not in (1, (1, 1)) or getattr(a, "return_indices", False):
        raise Unsupported("a dilated max pooling or one returning indices")
    return Gauss(*m.max_pool(a.input, a.kernel_size, a.stride, a.padding, a.ceil_mode))


MAX_POOL = add(Operation(
    "max pooling", modules=(nn.MaxPool2d,), functions=(F.max_pool2d, torch.max_pool2d),
    signature=("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    defaults={"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
    attributes=_pool_attributes,
    rules={"lipschitz": _scaled(lambda c: gains.window_gain(c.a.kernel_size, c.a.stride or c.a.kernel_size,
                                                            c.a.dilation)),
           "moments": _max_pool_moments}))


def _avg_pool_moments(c, it):
    a = c.a
    return Gauss(*m.avg_pool(a.input, a.kernel_size, a.stride, a.padding, a.ceil_mode, a.count_include_pad,
                             a.divisor_override))


AVG_POOL = add(Operation(
    "average pooling", modules=(nn.AvgPool2d,), functions=(F.avg_pool2d,),
    signature=("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    defaults={"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None},
    attributes=lambda mod: {"kernel_size": mod.kernel_size, "stride": mod.stride, "padding": mod.padding,
                            "ceil_mode": mod.ceil_mode, "count_include_pad": mod.count_include_pad,
                            "divisor_override": mod.divisor_override},
    rules={"lipschitz": _scaled(lambda c: gains.window_gain(c.a.kernel_size, c.a.stride or c.a.kernel_size,
                                                            average=True)),
           "moments": _avg_pool_moments}))
ADAPTIVE_AVG_POOL = add(Operation(
    "adaptive average pooling", modules=(nn.AdaptiveAvgPool2d,), functions=(F.adaptive_avg_pool2d,),
    signature=("input", "output_size"), attributes=lambda mod: {"output_size": mod.output_size},
    rules={"lipschitz": _scaled(lambda c: gains.adaptive_gain(c.shape(c.node.all_input_nodes[0])[-2:],
                                                              c.shape()[-2:])),
           "moments": lambda c, it: Gauss(*m.adaptive_avg_pool(c.a.input, c.a.output_size))}))


def _mean_lipschitz(c, it) -> float:
    """An average of n entries: gain 1/sqrt(n)."""
    before, after = c.shape(c.node.all_input_nodes[0]), c.shape()
    return c.args[0] / math.sqrt(math.prod(before) // max(1, math.prod(after)))


def _mean_moments(c, it):
    if not isinstance(c.args[0], Gauss):
        return torch.mean(*c.args, **c.kwargs)
    return Gauss(*m.reduce_mean(*c.args, **c.kwargs))


MEAN = add(Operation("mean", functions=(torch.mean,), methods=("mean",),
                     rules={"lipschitz": _mean_lipschitz, "moments": _mean_moments}))


# --- sums, products, concatenation -------------------------------------------------------------------------

def _sum_lipschitz(c, it) -> float:
    return sum(_bound(c, i) for i in range(len(c.node.args)))


def _add_moments(c, it):
    a, b = c.args[:2]
    if isinstance(a, Gauss) and isinstance(b, Gauss):
        return Gauss(*m.add(a, b))
    g, k = (a, b) if isinstance(a, Gauss) else (b, a)
    return Gauss(g.mean + k, g.var) if isinstance(g, Gauss) else a + b


SUM = add(Operation("sum", functions=(operator.add, torch.add), rules={"lipschitz": _sum_lipschitz,
                                                                       "moments": _add_moments}))
DIFFERENCE = add(Operation("difference", functions=(operator.sub, torch.sub), rules={"lipschitz": _sum_lipschitz}))


def _mul_lipschitz(c, it) -> float:
    nodes = [i for i in range(len(c.node.args)) if c.from_node(i)]
    if len(nodes) != 1:  # a product of two values of the input has no global bound
        return _unavailable(c)
    constant = next(v for i, v in enumerate(c.args) if i not in nodes)
    return abs(float(constant)) * c.args[nodes[0]]


def _mul_moments(c, it):
    a, b = c.args[:2]
    g, k = (a, b) if isinstance(a, Gauss) else (b, a)
    if isinstance(g, Gauss) and isinstance(k, Gauss):
        return Gauss(*m.product(g, k))
    if not isinstance(g, Gauss):
        return a * b
    return Gauss(g.mean * k, None if g.var is None else g.var * k * k)


PRODUCT = add(Operation("product", functions=(operator.mul, torch.mul), rules={"lipschitz": _mul_lipschitz,
                                                                                "moments": _mul_moments}))
NEGATION = add(Operation("negation", functions=(operator.neg, torch.neg), rules={
    "lipschitz": lambda c, it: c.args[0],
    "moments": lambda c, it: Gauss(-c.args[0].mean, c.args[0].var) if isinstance(c.args[0], Gauss) else -c.args[0]}))


def _cat_lipschitz(c, it) -> float:
    parts = c.node.args[0]
    return math.sqrt(sum(v ** 2 if isinstance(p, torch.fx.Node) else 0.0 for p, v in zip(parts, c.args[0],
                                                                                          strict=True)))


def _cat_moments(c, it):
    parts, rest = c.args[0], c.args[1:]
    if all(p.var is None for p in parts):
        return Gauss(torch.cat([p.mean for p in parts], *rest, **c.kwargs), None)
    var = [p.var if p.var is not None else torch.zeros_like(p.mean) for p in parts]
    return Gauss(torch.cat([p.mean for p in parts], *rest, **c.kwargs), torch.cat(var, *rest, **c.kwargs))


CONCATENATION = add(Operation("concatenation", functions=(torch.cat,), rules={"lipschitz": _cat_lipschitz,
                                                                              "moments": _cat_moments}))


# --- entries copied: reshapes, selections, padding, eval-mode dropout ------------------------------------

RESHAPE = add(Operation(
    "reshape", modules=(nn.Flatten, nn.Identity), functions=(torch.flatten,),
    methods=("flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "clone"),
    rules={"lipschitz": lambda c, it: c.args[0], "moments": plain_or_copied}))
DROPOUT = add(Operation("dropout (eval mode: the identity)", modules=(nn.modules.dropout._DropoutNd,),
                        functions=(F.dropout,), rules={"lipschitz": lambda c, it: c.args[0],
                                                       "moments": plain_or_copied}))


def _getitem_lipschitz(c, it) -> float:
    if not gains.basic_index(c.node.args[1]):
        return _unavailable(c)
    return c.args[0]  # basic indexing keeps a subset of the entries


SELECTION = add(Operation("selection", functions=(operator.getitem,), rules={"lipschitz": _getitem_lipschitz,
                                                                             "moments": plain_or_copied}))


def _pad_mode(c) -> str:
    return c.kwargs.get("mode", c.args[2] if len(c.args) > 2 else "constant")


def _pad_moments(c, it):
    g = c.args[0]
    if not isinstance(g, Gauss):
        return F.pad(*c.args, **c.kwargs)
    mean = F.pad(g.mean, *c.args[1:], **c.kwargs)
    if g.var is None:
        return Gauss(mean, None)
    # constant pads have no variance; reflect/replicate/circular copy entries
    var = F.pad(g.var, c.args[1]) if _pad_mode(c) == "constant" else F.pad(g.var, *c.args[1:], **c.kwargs)
    return Gauss(mean, var)


PADDING = add(Operation("padding", functions=(F.pad,), rules={
    "lipschitz": lambda c, it: c.args[0] if _pad_mode(c) == "constant" else _unavailable(c),  # zeros do not move
    "moments": _pad_moments}))


# --- shape queries (and the assertions on them traced code carries) --------------------------------------

def _shape_query(c, it):
    x = c.args[0]
    if c.node.op == "call_method":
        return getattr(x.mean if isinstance(x, Gauss) else x, c.node.target)(*c.args[1:], **c.kwargs)
    return getattr(x.mean, c.args[1]) if isinstance(x, Gauss) else getattr(*c.args)


SHAPE_ATTRIBUTES = {"ndim", "shape", "dtype", "device"}
SHAPE = add(Operation("shape query", functions=(getattr,), methods=("size", "dim"), rules={
    "lipschitz": lambda c, it: c.args[0] if c.node.op == "call_function" else 0.0, "moments": _shape_query}))
def _constant_lipschitz(c, it) -> float:
    """A comparison of shapes (traced code's assertions): a constant, bound 0. Of tensors it is a step
    function, with no Lipschitz bound."""
    return 0.0 if not c.shape() else _unavailable(c)


COMPARISON = add(Operation("comparison", functions=(operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                                                    operator.ge, torch._assert),
                           rules={"lipschitz": _constant_lipschitz, "moments": plain_or_copied}))


def _divisor(c):
    """The constant a value is divided by (None when the divisor is a value of the graph)."""
    return None if c.from_node(1) else c.args[1]


def _div_lipschitz(c, it) -> float:
    d = _divisor(c)
    return c.args[0] / abs(float(d)) if d is not None and c.from_node(0) else _unavailable(c)


def _div_moments(c, it):
    g, d = c.args[0], _divisor(c)
    if d is None and any(isinstance(v, Gauss) for v in c.args[1:]):
        raise Unsupported("a division by a random value")
    if not isinstance(g, Gauss):
        return plain(c)
    return Gauss(g.mean / d, None if g.var is None else g.var / (d * d))


DIVISION = add(Operation("division by a constant", functions=(operator.truediv, torch.div), methods=("div",),
                         rules={"lipschitz": _div_lipschitz, "moments": _div_moments}))
