"""Deployment forms whose exported graph holds the factors, not what they make.

A layer deployed as its dense kernel (`RebuiltLayer`) rebuilds the kernel from its factors inside the
graph; a layer deployed as a factor chain (`chain_from_factors`) computes the weight-only products its
chain needs from the factors the same way. Either way the contraction is a `Contraction`: the format's
own expression (`Format.kernel_expression`, or the chain's plan), contracted pairwise in the FLOP-optimal
order, each step a Transpose, a Reshape and a MatMul with every shape fixed when the module is built
(factors are stored already laid out for the step that reads them, so most of those nodes vanish).
Exported without the exporter's constant folding, these nodes read only initializers: onnxruntime's
constant folding computes them once, when a session is created, and the session runs exactly the graph
with the products stored (`folds` in onnx_graph.py checks that it did), from a file the size of the
factors. Only plain operators: a runtime that does not fold computes the same thing at every call.
"""

from __future__ import annotations

import copy
import math
import string

import opt_einsum
import torch
import torch.nn.functional as F
from torch import nn

from ..formats import TensorizedLayer, TensorizedLinear

Modes = tuple[str, ...]
CHAIN_SAVING = 0.75  # a chain stores its factors (and computes its products) only when they are this much smaller


def split_modes(term: str) -> Modes:
    """"(r1)h(r2)" -> ("r1", "h", "r2"): conv_einsum's multi-letter modes in parentheses."""
    modes, i = [], 0
    while i < len(term):
        if term[i] == "(":
            j = term.index(")", i)
            modes.append(term[i + 1:j])
            i = j + 1
        else:
            modes.append(term[i])
            i += 1
    return tuple(modes)


def _identity(perm: list[int]) -> bool:
    return perm == list(range(len(perm)))


class _Step:
    """Operands i and j of the live list contracted into one appended at the end: each permuted to
    (batch, kept, summed) / (batch, summed, kept) and viewed as a matrix (a stack of them when modes are
    shared and kept) for one MatMul. A permutation or reshape that would change nothing is left out."""

    def __init__(self, i: int, j: int, a: Modes, b: Modes, keep: set[str], size: dict[str, int]):
        batch = [m for m in a if m in b and m in keep]
        summed = [m for m in a if m in b and m not in keep]
        left, right = [m for m in a if m not in b], [m for m in b if m not in a]

        def n(modes):
            return math.prod(size[m] for m in modes)

        def view(modes: list[str], shape: list[int]) -> list[int] | None:
            return None if [size[m] for m in modes] == shape else shape

        lead = [n(batch)] if batch else []
        self.i, self.j = i, j
        self.perm_a = [a.index(m) for m in batch + left + summed]
        self.perm_b = [b.index(m) for m in batch + summed + right]
        self.shape_a = view(batch + left + summed, lead + [n(left), n(summed)])
        self.shape_b = view(batch + summed + right, lead + [n(summed), n(right)])
        kept = batch + left + right
        self.out_shape = view(kept, lead + [n(left), n(right)]) and [size[m] for m in kept]
        self.modes = tuple(batch + left + right)

    def prepare(self, side: str, factor: torch.Tensor) -> torch.Tensor:
        """`factor` (operand `side`) in the layout this step reads it in; the step then reads it as it is."""
        perm, shape = (self.perm_a, self.shape_a) if side == "a" else (self.perm_b, self.shape_b)
        factor = factor.permute(perm)
        if shape is not None:
            factor = factor.reshape(shape)
        if side == "a":
            self.perm_a, self.shape_a = list(range(factor.dim())), None
        else:
            self.perm_b, self.shape_b = list(range(factor.dim())), None
        return factor

    def __call__(self, operands: list[torch.Tensor]) -> list[torch.Tensor]:
        a, b = operands[self.i], operands[self.j]
        a = a if _identity(self.perm_a) else a.permute(self.perm_a)
        b = b if _identity(self.perm_b) else b.permute(self.perm_b)
        a = a if self.shape_a is None else a.reshape(self.shape_a)
        b = b if self.shape_b is None else b.reshape(self.shape_b)
        out = torch.matmul(a, b)
        out = out if self.out_shape is None else out.reshape(self.out_shape)
        return [t for k, t in enumerate(operands) if k not in (self.i, self.j)] + [out]


class Dequantized(nn.Module):
    """A weight stored as integer levels and a scale (a BQN's MAP QNN): scale x levels, computed in the graph
    by Cast and Mul, which onnxruntime folds when a session starts (a DequantizeLinear it would not: it
    keeps those for its quantized kernels, and the kernel would be rebuilt at every call)."""

    def __init__(self, levels: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        if levels.numel() and (levels.min() < -128 or levels.max() > 127 or not torch.equal(levels, levels.round())):
            raise ValueError("levels must be integers in -128..127")
        self.register_buffer("levels", levels.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.detach().float().contiguous())

    @property
    def shape(self) -> torch.Size:
        return self.levels.shape

    def forward(self) -> torch.Tensor:
        return self.levels.float() * self.scale


class Summed(nn.Module):
    """A source summed over some of its dims in the graph (a chain's first step over a quantized factor)."""

    def __init__(self, source: nn.Module, dims: tuple[int, ...]):
        super().__init__()
        self.source, self.dims = source, list(dims)
        self.shape = torch.Size(d for i, d in enumerate(source.shape) if i not in self.dims)

    def forward(self) -> torch.Tensor:
        return self.source().sum(self.dims)


Source = torch.Tensor | nn.Module  # a tensor, or a module that gives one (Dequantized, Summed) with its .shape


class QuantizedWeight(nn.Module):
    """A dense convolution or linear layer whose weight a source gives (a BQN's quantized dense layer)."""

    def __init__(self, layer: nn.Module, weight: nn.Module):
        super().__init__()
        self.layer = copy.deepcopy(layer)
        del self.layer.weight  # the file holds the source's levels, not the float weight
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, self.weight(), self.layer.bias)
        return self.layer._conv_forward(x, self.weight(), self.layer.bias)


class Contraction(nn.Module):
    """The product of `factors` (modes `terms`) with modes `out` in that order, computed on every call
    from the factors it stores (float32, frozen; or Dequantized ones, which it calls). Modes held by one
    factor only and not in `out` are summed over first (into a stored tensor, once)."""

    def __init__(self, factors: list[Source], terms: list[Modes], out: Modes):
        super().__init__()
        counts: dict[str, int] = {}
        for term in terms:
            for m in term:
                counts[m] = counts.get(m, 0) + 1
        stored, live, dims, self.lone = [], [], [], {}
        for k, (f, term) in enumerate(zip(factors, terms, strict=True)):
            lone = [i for i, m in enumerate(term) if counts[m] == 1 and m not in out]
            if isinstance(f, nn.Module):  # called in the graph: what it gives is summed and laid out there
                stored.append(f)
                if lone:
                    self.lone[k] = lone
            else:
                stored.append((f.detach().float().sum(lone) if lone else f.detach().float()).clone())
            live.append(tuple(m for i, m in enumerate(term) if i not in lone))
            dims.append([d for i, d in enumerate(f.shape) if i not in lone])
        size = {m: d for term, ds in zip(live, dims, strict=True) for m, d in zip(term, ds, strict=True)}
        self.steps = []
        if len(stored) > 1:
            letters = {m: string.ascii_letters[k] for k, m in enumerate(dict.fromkeys(m for t in live for m in t))}
            equation = (",".join("".join(letters[m] for m in t) for t in live) + "->"
                        + "".join(letters[m] for m in out))
            path, _ = opt_einsum.contract_path(equation, *[tuple(d) for d in dims], shapes=True, optimize="optimal")
            origin = list(range(len(stored)))
            for i, j in path:
                rest = [t for k, t in enumerate(live) if k not in (i, j)]
                step = _Step(i, j, live[i], live[j], set(out) | {m for t in rest for m in t}, size)
                # a stored factor enters one step: stored already laid out as that step reads it
                for side, k in (("a", origin[i]), ("b", origin[j])):
                    if k is not None and not isinstance(stored[k], nn.Module):
                        stored[k] = step.prepare(side, stored[k])
                self.steps.append(step)
                live = rest + [step.modes]
                origin = [o for k, o in enumerate(origin) if k not in (i, j)] + [None]
        self.final = [live[0].index(m) for m in out]
        self.factors = nn.ParameterList([nn.Parameter(f.contiguous(), requires_grad=False) for f in stored
                                         if not isinstance(f, nn.Module)])
        self.quantized = nn.ModuleDict({str(k): f for k, f in enumerate(stored) if isinstance(f, nn.Module)})
        self.order = [("q", str(k)) if isinstance(f, nn.Module) else ("f", sum(
            not isinstance(g, nn.Module) for g in stored[:k])) for k, f in enumerate(stored)]

    def operands(self) -> list[torch.Tensor]:
        out = []
        for k, (kind, key) in enumerate(self.order):
            if kind == "f":
                out.append(self.factors[key])
            else:
                value = self.quantized[key]()
                out.append(value.sum(self.lone[k]) if k in self.lone else value)
        return out

    def forward(self) -> torch.Tensor:
        operands = self.operands()
        for step in self.steps:
            operands = step(operands)
        return operands[0] if _identity(self.final) else operands[0].permute(self.final)


def _expression_terms(text: str) -> tuple[list[Modes], Modes]:
    inputs, output = text.split("|")[0].split("->")
    return [split_modes(t) for t in inputs.split(",")], split_modes(output)


class RebuiltLayer(nn.Module):
    """The dense convolution (or linear layer) of a tensorial layer, its kernel rebuilt from the factors
    on every call: for export (see the module docstring), not for training."""

    def __init__(self, layer: TensorizedLayer, factors: list[Source] | None = None):
        super().__init__()
        shape = layer.shape
        terms, out = _expression_terms(layer.format.kernel_expression(shape, layer.tensorization))
        self.kernel = Contraction(factors or list(layer.factors), terms, out)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().float().clone(),
                                                                 requires_grad=False)
        self.shape, self.linear = shape, isinstance(layer, TensorizedLinear)
        if not self.linear:
            self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
            self.padding_mode = layer.padding_mode
            # nn.Conv2d's own reading of the padding, for the modes other than zeros ("same" included)
            geometry = nn.Conv2d(shape.in_channels * shape.groups, shape.out_channels, (shape.kh, shape.kw),
                                 stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                 groups=shape.groups, bias=False, device="meta")
            self.pads = list(geometry._reversed_padding_repeated_twice)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shape
        kernel = self.kernel().reshape(s.out_channels, s.in_channels, s.kh, s.kw)
        if self.linear:
            return F.linear(x, kernel.reshape(s.out_channels, -1), self.bias)
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(x, self.pads, mode=self.padding_mode), kernel, self.bias, self.stride, 0,
                            self.dilation, s.groups)
        return F.conv2d(x, kernel, self.bias, self.stride, self.padding, self.dilation, s.groups)


def chain_from_factors(frozen: TensorizedLayer, layer: TensorizedLayer,
                       factors: list[Source] | None = None) -> TensorizedLayer:
    """A copy of the factor chain `frozen` (a bound `layer`) whose weight-only products are computed from
    `layer`'s factors (or the sources given for them) on every call rather than stored."""
    chain = copy.deepcopy(frozen)
    bound = chain.bound
    factors = list(factors or [f.detach() for f in layer.factors])
    for i, dims in bound.reductions.items():  # the sums the plan does first, as binding did
        f = factors[i - 1]
        factors[i - 1] = Summed(f, dims) if isinstance(f, nn.Module) else f.sum(dims)
    bound.compute_constants({n: Contraction([factors[k - 1] for k, _ in joined], [modes for _, modes in joined], out)
                             for n, (joined, out) in bound.origins.items()})
    return chain


def with_factor_weights(deployed: nn.Module, student: nn.Module,
                        quantized: dict[str, Dequantized] | None = None) -> nn.Module:
    """`deployed` (a deployable copy, changed in place) with every layer of `student` that it holds as a
    dense kernel, or as a factor chain whose products are larger than its factors, computing its weights
    from the factors instead (see the module docstring). `quantized`: parameters of `student` (by name)
    stored as integer levels and a scale."""
    quantized = quantized or {}
    for name, layer in student.named_modules():
        if isinstance(layer, TensorizedLayer):
            factors = [quantized.get(f"{name}.factors.{k}", f.detach()) for k, f in enumerate(layer.factors)]
            current = deployed.get_submodule(name)
            if isinstance(current, TensorizedLayer) and current.bound is not None:
                # a chain's stored products can be about as small as its factors (a CP chain's are: it only
                # joins the two 1-D spatial factors): then they stay, with no nodes to compute them, unless
                # the factors save a quarter; quantized factors are always the smaller
                products = sum(getattr(current.bound, f"node{n}").numel() for n in current.bound._constants)
                if any(isinstance(f, nn.Module) for f in factors) or \
                        sum(f.numel() for f in layer.factors) <= CHAIN_SAVING * products:
                    deployed.set_submodule(name, chain_from_factors(current, layer, factors).eval())
            elif isinstance(current, (nn.Conv2d, nn.Linear)):
                deployed.set_submodule(name, RebuiltLayer(layer, factors).eval())
        elif f"{name}.weight" in quantized and isinstance(layer, (nn.Conv2d, nn.Linear)):
            deployed.set_submodule(name, QuantizedWeight(deployed.get_submodule(name), quantized[f"{name}.weight"]))
    return deployed


def factor_initializers(model: nn.Module) -> set[str]:
    """The names the exporter gives what `model` computes its weights from: every Contraction's stored
    factors and every Dequantized's levels and scale."""
    names = {f"{name}.factors.{k}" for name, m in model.named_modules() if isinstance(m, Contraction)
             for k in range(len(m.factors))}
    return names | {f"{name}.{buffer}" for name, m in model.named_modules() if isinstance(m, Dequantized)
                    for buffer in ("levels", "scale")}
