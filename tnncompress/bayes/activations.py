"""Quantised activations: the dissertation's BQNs quantise activations as well as weights (5.4.1: binary
weights and sign activations). Every ReLU of the student becomes a `QuantizedActivation`:

- 1 bit: sign, +1 where the input is positive and -1 elsewhere (the dissertation's);
- B = 2..4 bits: a quantised ReLU, step x clamp(round(h / step), 0, 2^B - 1), its step fitted to the
  float ReLU's outputs on the calibration pool and then learned with the posterior.

The student is traced (torch.fx) and each ReLU node, whether a module, a function or a method call, is
replaced by a submodule `activations.<node>`; the result is a GraphModule holding the student's own
modules under their names. `structure.json` records the bits and the nodes (`record`), and `load(DIR)`
replays the same replacement on the rebuilt model (`from_record`), so the saved QNN reloads whole.
Moments through them have closed forms (`rules.sign`, `rules.staircase`), which cost one normal CDF per
threshold and activation: hence at most 4 bits.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..inspect.graph import trace
from ..ops import OPERATIONS, Gauss, Operation
from ..ops import moments as rules

MAX_BITS = 4
PREFIX = "activations"
_RELU_FUNCTIONS = {F.relu, torch.relu}
OBSERVED_PER_BATCH = 25_000  # input values a quantiser keeps per batch to fit its step
STEP_CANDIDATES = 64


class QuantizedActivation(nn.Module):
    traced_as_leaf = True  # one node of a traced graph, with its own moment rule

    def __init__(self, bits: int):
        super().__init__()
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"activation bits must be 1..{MAX_BITS}, got {bits}")
        self.bits = bits
        if bits > 1:  # sign has no scale: the norm before it sets its threshold
            self.log_step = nn.Parameter(torch.zeros(()))
        self.observed: list[torch.Tensor] | None = None  # while fitting: computes ReLU and keeps inputs

    @property
    def top(self) -> int:
        return 2 ** self.bits - 1

    @property
    def step(self) -> torch.Tensor:
        return self.log_step.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observed is not None:
            flat = x.detach().flatten()
            if flat.numel() > OBSERVED_PER_BATCH:  # evenly spaced entries: deterministic, every position
                flat = flat[torch.linspace(0, flat.numel() - 1, OBSERVED_PER_BATCH, device=flat.device).long()]
            self.observed.append(flat.cpu())
            return F.relu(x)
        if self.bits == 1:
            return 2.0 * (x > 0).to(x.dtype) - 1.0
        step = self.step
        return torch.clamp(torch.round(x / step), 0, self.top) * step

    def moments(self, x: rules.Moments) -> rules.Moments:
        if self.bits == 1:
            return rules.sign(x)
        return rules.staircase(x, self.step, self.top)

    def extra_repr(self) -> str:
        return "sign" if self.bits == 1 else f"bits={self.bits}, levels=0..{self.top} x step"


def _is_relu(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target == "relu"
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.ReLU)


def quantize_activations(model: nn.Module, bits: int, nodes: list[str] | None = None) -> torch.fx.GraphModule:
    """`model` as a GraphModule with its ReLUs (those of `nodes`, the traced node names, when given)
    replaced by `QuantizedActivation(bits)` submodules `activations.<node>`."""
    gm = trace(model)
    gm.add_module(PREFIX, nn.Module())
    replaced = []
    for node in list(gm.graph.nodes):
        if not _is_relu(gm, node) or (nodes is not None and node.name not in nodes):
            continue
        gm.get_submodule(PREFIX).add_module(node.name, QuantizedActivation(bits))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(f"{PREFIX}.{node.name}", (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        replaced.append(node.name)
    missing = sorted(set(nodes or ()) - set(replaced))
    if missing:
        raise ValueError(f"no ReLU node named {', '.join(missing)} in the traced model")
    if not replaced:
        raise ValueError("the model has no ReLU to quantise")
    gm.graph.lint()
    gm.delete_all_unused_submodules()  # the nn.ReLU modules replaced
    gm.recompile()
    return gm


def quantizers(model: nn.Module) -> dict[str, QuantizedActivation]:
    """{node name: quantiser} of a model made by `quantize_activations` (empty for any other)."""
    return {name.split(".", 1)[1]: m for name, m in model.named_modules()
            if isinstance(m, QuantizedActivation) and name.startswith(PREFIX + ".")}


def record(model: nn.Module) -> dict | None:
    """What structure.json holds about the model's quantised activations (None: it has none)."""
    found = quantizers(model)
    if not found:
        return None
    bits = {m.bits for m in found.values()}
    return {"bits": bits.pop(), "nodes": sorted(found)}


def from_record(model: nn.Module, rec: object) -> nn.Module:
    """The replacement `record` describes, replayed on a rebuilt model; raises ValueError on a record
    that is not one."""
    if not isinstance(rec, dict) or not isinstance(rec.get("bits"), int) or isinstance(rec.get("bits"), bool):
        raise ValueError("'activations' must be an object with integer 'bits' and a list 'nodes'")
    nodes = rec.get("nodes")
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
        raise ValueError("'activations.nodes' must be a non-empty list of node names")
    return quantize_activations(model, rec["bits"], nodes)


@torch.no_grad()
def fit_steps(model: nn.Module, batches) -> dict[str, float]:
    """Each B-bit quantiser's step chosen to minimise the squared error to the float ReLU's output on
    the inputs it sees over `batches` (with float ReLUs everywhere); returns {node: step}."""
    found = {n: m for n, m in quantizers(model).items() if m.bits > 1}
    for m in found.values():
        m.observed = []
    try:
        for x in batches:
            model(x)
    finally:
        values = {n: torch.cat(m.observed).double() for n, m in found.items()}
        for m in found.values():
            m.observed = None
    steps = {}
    for name, m in found.items():
        steps[name] = best_step(values[name], m.top)
        m.log_step.fill_(math.log(steps[name]))
    return steps


def best_step(h: torch.Tensor, top: int) -> float:
    """argmin over a geometric range of steps of sum (relu(h) - step clamp(round(h / step), 0, top))^2."""
    target = h.clamp_min(0)
    peak = float(target.max())
    if peak <= 0:
        return 1.0
    best, best_err = peak / top, math.inf
    for f in torch.logspace(math.log10(0.02), 0, STEP_CANDIDATES, dtype=torch.float64).tolist():
        step = f * peak / top
        err = float((target - torch.clamp(torch.round(h / step), 0, top) * step).pow(2).sum())
        if err < best_err:
            best, best_err = step, err
    return best


# the quantiser's moments are its own (a staircase of Gaussian tail probabilities); it has no Lipschitz rule
OPERATIONS.add(Operation("quantised activation", modules=(QuantizedActivation,),
                         rules={"moments": lambda c, it: Gauss(*c.module.moments(c.args[0]))}))
