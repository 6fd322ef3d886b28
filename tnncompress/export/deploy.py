"""The deployment forms of a tensorial layer, and a model with a form assigned to each layer.

A layer deploys either as the dense convolution its factors represent (the kernel rebuilt once, in
float64) or as a factor chain: its conv_einsum plan with the weight-only steps done once (a frozen
`BoundExpression`). A chain can follow several plans: the FLOP-optimal one ("optimal"), opt_einsum's
greedy order ("greedy") or left to right ("naive"); which is fastest depends on the runtime, the batch
size and the layer's shape, which is why `choose.py` times them. Candidates are named "dense" or by
their plan, and a model's assignment is {layer name: candidate}.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..einsum.autotune import candidate_paths
from ..einsum.paths import path_cost
from ..formats import TensorizedLayer, TensorizedLinear
from ..limits import limit

CHAIN_MARGIN = 0.8  # "flops": the chain is used when its FLOPs are below this fraction of the dense layer's
FORMS = ("auto", "flops", "dense", "factors")
DENSE, CHAIN = "dense", "optimal"  # the two pure forms' candidates
FLOP_FACTOR = 2  # chains with more than this many times the FLOP-optimal chain's FLOPs are not tried
MEMORY_FACTOR = 4  # ... nor with a largest intermediate more than this many times the FLOP-optimal chain's


@dataclass
class DeployChoice:
    """One layer's deployment form and what it was chosen from."""

    name: str
    form: str  # "dense" or "factors"
    plan: str | None  # the factor chain's plan ("optimal", "greedy", "naive"); None when dense
    flops_dense: int  # per sample
    flops_factors: int  # of the FLOP-optimal chain, per sample
    path: list[list[int]] | None = None  # the chain's SSA path, replayed at load time
    ms: dict[str, dict[str, float]] = field(default_factory=dict)  # measured: candidate -> batch -> ms

    @property
    def candidate(self) -> str:
        return self.plan if self.form == "factors" else DENSE

    @property
    def label(self) -> str:
        """"dense", "factors" (the FLOP-optimal chain) or "factors:PLAN"."""
        return self.form if self.plan in (None, CHAIN) else f"factors:{self.plan}"


def tensorized_inputs(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1) -> dict[str, tuple]:
    """The input shape each tensorial layer of `model` sees for a batch of `batch` samples."""
    shapes: dict[str, tuple] = {}

    def record(name: str):
        def hook(module, args) -> None:  # returns None: a pre-hook's return value replaces the arguments
            shapes.setdefault(name, tuple(args[0].shape))
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules()
             if isinstance(m, TensorizedLayer)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(batch, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def dense_module(layer: TensorizedLayer) -> nn.Module:
    """The nn.Conv2d (or nn.Linear) with the kernel the factors represent, rebuilt in float64."""
    with torch.no_grad():
        kernel = layer.format.rebuild([f.double() for f in layer.factors], layer.shape, layer.tensorization)
        kernel = kernel.to(layer.factors[0].dtype)
        s = layer.shape
        if isinstance(layer, TensorizedLinear):
            dense = nn.Linear(s.in_channels, s.out_channels, bias=layer.bias is not None)
            dense.weight.copy_(kernel[:, :, 0, 0])
        else:
            dense = nn.Conv2d(s.in_channels * s.groups, s.out_channels, (s.kh, s.kw), stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=s.groups,
                              bias=layer.bias is not None, padding_mode=layer.padding_mode)
            dense.weight.copy_(kernel)
        if layer.bias is not None:
            dense.bias.copy_(layer.bias)
    return dense.to(device=kernel.device, dtype=kernel.dtype)


def dense_flops(layer: TensorizedLayer, input_shape: tuple) -> int:
    s = layer.shape
    if isinstance(layer, TensorizedLinear):
        return 2 * (torch.Size(input_shape[:-1]).numel()) * s.in_channels * s.out_channels
    with torch.no_grad():  # the output size, from the geometry alone
        out = nn.functional.conv2d(torch.zeros(1, 1, *input_shape[-2:]), torch.zeros(1, 1, s.kh, s.kw),
                                   stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    return 2 * input_shape[0] * s.out_channels * out.shape[-2] * out.shape[-1] * s.in_channels * s.kh * s.kw


def chain_paths(layer: TensorizedLayer, input_shape: tuple, batch: int = 1) -> dict[str, list[tuple[int, int]]]:
    """The factor chains worth trying for this layer, by plan name. The rebuild-the-kernel plan is left
    out: bound to its weights it is the dense form. A chain whose largest intermediate at `batch`
    samples exceeds the `chain_bytes` limit is left out too (ResNet-50's `mcp` chains at rate 0.1 hold
    3.8 GB at batch 32): its layer deploys dense."""
    with torch.no_grad():
        expr = layer.plan_for(input_shape)
    paths = candidate_paths(expr, backward=False)
    paths.pop("rebuild", None)
    paths.pop("optimal-forward", None)  # the same as "optimal" when no backward pass is counted
    paths.setdefault(CHAIN, expr.path)  # the FLOP-optimal chain is a candidate (a pure form) if it fits
    # A chain far costlier than the FLOP-optimal one is not worth timing (left to right can be 500x it), nor
    # one whose largest intermediate is far larger: it is bound by memory traffic (ResNet-50's mcp chains at
    # 5%: 6x and 32x the intermediate ran 25x and 20x slower than the dense layer, at 1.0-1.5x the FLOPs).
    cost = {name: path_cost(expr.network, path)[:2] for name, path in paths.items()}  # (FLOPs, intermediate)
    cheapest, smallest = cost[CHAIN]
    return {name: path for name, path in paths.items()
            if (name == CHAIN or (cost[name][0] <= FLOP_FACTOR * cheapest
                                  and cost[name][1] <= MEMORY_FACTOR * smallest))
            and chain_fits(expr, path, batch)}


def chain_fits(expr, path, batch: int) -> bool:
    """Whether the chain's largest intermediate, for `batch` samples of float32, is within the limit
    (an upper bound: weight-only intermediates do not grow with the batch)."""
    per_sample = path_cost(expr.network, path)[1] // max(expr.shapes[0][0], 1)
    return 4 * per_sample * batch <= limit("chain_bytes")


def bind(layer: TensorizedLayer, input_shape: tuple, path) -> TensorizedLayer:
    """A frozen copy of `layer` that evaluates the chain `path` for inputs shaped like `input_shape`."""
    frozen = copy.deepcopy(layer).eval()
    frozen.optimize = tuple(tuple(step) for step in path)
    frozen.freeze(input_shape)
    return frozen


def candidates(layer: TensorizedLayer, input_shape: tuple, batch: int = 1) -> dict[str, tuple[nn.Module, list | None]]:
    """Every deployment form of `layer` at up to `batch` samples: candidate name -> (module, chain path
    or None)."""
    forms: dict[str, tuple[nn.Module, list | None]] = {DENSE: (dense_module(layer).eval(), None)}
    for name, path in chain_paths(layer, input_shape, batch).items():
        forms[name] = (bind(layer, input_shape, path), [list(step) for step in path])
    return forms


def choice(name: str, layer: TensorizedLayer, input_shape: tuple, candidate: str, path=None) -> DeployChoice:
    """The record of `candidate` for this layer (FLOPs per sample)."""
    per_sample = (1, *input_shape[1:])
    return DeployChoice(name, DENSE if candidate == DENSE else "factors", None if candidate == DENSE else candidate,
                        dense_flops(layer, per_sample), layer.plan_for(per_sample).flops, path)


def fixed_choices(model: nn.Module, inputs: dict[str, tuple], form: str, batch: int = 1) -> list[DeployChoice]:
    """Forms that need no measurement: every layer dense, every layer its FLOP-optimal chain, or
    whichever of the two the FLOP count favours ("flops"); a chain beyond the memory limit at `batch`
    samples (`chain_fits`) is dense in each."""
    out = []
    for name, shape in inputs.items():
        layer = model.get_submodule(name)
        record = choice(name, layer, shape, CHAIN)
        expr = layer.plan_for(shape)
        if form == DENSE or not chain_fits(expr, expr.path, batch) or (
                form == "flops" and record.flops_factors >= CHAIN_MARGIN * record.flops_dense):
            record = choice(name, layer, shape, DENSE)
        else:
            record.path = [list(step) for step in expr.path]
        out.append(record)
    return out


def deployed(model: nn.Module, inputs: dict[str, tuple], choices: list[DeployChoice]) -> nn.Module:
    """A copy of `model` in eval mode with each layer in the form its choice names."""
    out = copy.deepcopy(model).eval()
    for c in choices:
        layer = out.get_submodule(c.name)
        module = dense_module(layer).eval() if c.form == DENSE else bind(layer, inputs[c.name], c.path)
        out.set_submodule(c.name, module)
    return out
