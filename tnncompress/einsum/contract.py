"""conv_einsum: einsum with convolution modes, planned once per set of shapes and cached.

Semantics. The first operand is the layer input (the signal), every other operand a weight. Along each
convolution mode the weights combine by full convolution into one effective filter, and the result is
PyTorch's cross-correlation of the input with that filter, with `stride`, `padding` (int, per-mode
tuple, "same" or "valid") and `dilation` applied to the effective filter. So
`conv_einsum("bshw,tshw->bthw|hw", x, w, stride=s, padding=p, dilation=d)` is `F.conv2d(x, w, ...)`.
With `weights_only=True` every operand is a weight and convolution modes combine by full convolution
(rebuilding a dense kernel from its factors).

Letters that are not convolution modes follow einsum: summed when absent from the output, batch
products when shared and kept, outer products otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from . import paths, plan_cache
from .atomic import CompiledStep, compile_step
from .autotune import fastest_path, path_fits
from .geometry import resolve
from .network import Network
from .parser import Expression, ExpressionError, mode_sizes, parse


@dataclass(frozen=True)
class PlanStep:
    operands: tuple[int, int]  # SSA node ids
    kind: str
    label: str
    flops: int
    shape: tuple[int, ...]


class ConvEinsumExpression:
    """A planned conv_einsum for fixed operand shapes: call it with the operands."""

    def __init__(self, text: str, shapes: tuple[tuple[int, ...], ...], stride=1, padding=0, dilation=1,
                 weights_only: bool = False, optimize: str = "optimal", backward: bool = False,
                 checkpoint: bool = False, device: str = "cpu", dtype: torch.dtype = torch.float32):
        parsed = parse(text)
        sizes = mode_sizes(parsed, list(shapes))
        self.text = text
        self.shapes = shapes
        self.output_modes = parsed.output
        self.checkpoint = checkpoint
        self.optimize = optimize
        self.backward = backward
        self._reductions, reduced = _single_operand_reductions(parsed)
        sizes = [{m: d for m, d in s.items() if m in t} for s, t in zip(sizes, reduced.inputs, strict=True)]
        self.geometry = resolve(reduced, sizes, stride, padding, dilation, weights_only)
        self.network = net = Network(reduced, sizes, self.geometry, weights_only)
        self._prepare_signal = self._signal_preprocessing()
        self.naive_flops = paths.path_cost(net, paths.naive_path(net.n))[0]
        self.rebuild_flops = paths.path_cost(net, paths.rebuild_path(net))[0]
        self.timings: dict[str, float] = {}
        if optimize == "measure":
            path = self._measured_path(stride, padding, dilation, weights_only, device, dtype)
        else:
            path = paths.find_path(net, optimize, backward)
        self._use_path(path)
        self.output_shape = tuple(net.size(frozenset(range(net.n)), m) for m in parsed.output)

    def _measured_path(self, stride, padding, dilation, weights_only, device, dtype) -> list[tuple[int, int]]:
        """The fastest candidate plan: the resumed run's (`plan_cache.pin`), or the plan cache's when it holds
        a valid one for this key (then `timings` stays empty), else timed now and stored there."""
        entry = plan_cache.key(self.text, self.shapes, stride, padding, dilation, weights_only, self.backward,
                               device, dtype)
        portable = plan_cache.portable_key(self.text, self.shapes, stride, padding, dilation, weights_only,
                                           self.backward, dtype)
        for known in (plan_cache.pinned(portable), plan_cache.lookup(entry)):  # a resumed run's, then the cache's
            if known is not None:
                try:
                    if path_fits(self, paths.check_path(self.network.n, known)):
                        plan_cache.remember(portable, known)
                        return known
                except (ValueError, IndexError, ExpressionError):  # not a path of this expression: measure again
                    pass
        path, self.timings = fastest_path(self, self.backward, device, dtype)
        plan_cache.store(entry, path)
        plan_cache.remember(portable, path)
        return path

    def _use_path(self, path: list[tuple[int, int]]) -> None:
        """Compile the pairwise steps of an SSA path (the runtime then only calls them)."""
        net = self.network
        self.path = path
        self.flops, self.largest_intermediate, costs = paths.path_cost(net, path)
        self._steps: list[tuple[int, int, CompiledStep, bool]] = []
        self.plan: list[PlanStep] = []
        modes = {i: net.expr.inputs[i] for i in range(net.n)}
        subsets = {i: frozenset([i]) for i in range(net.n)}
        for k, (i, j) in enumerate(path):
            step, swapped = compile_step(net, subsets[i], subsets[j], modes[i], modes[j])
            node = net.n + k
            subsets[node] = subsets.pop(i) | subsets.pop(j)
            modes[node] = step.modes
            self._steps.append((i, j, step, swapped))
            shape = tuple(net.size(subsets[node], m) for m in step.modes)
            self.plan.append(PlanStep((i, j), step.kind, step.label, costs[k][2], shape))
        final = modes[net.n + len(path) - 1] if path else net.expr.inputs[0]
        self._final_perm = [final.index(m) for m in self.output_modes]

    def _signal_preprocessing(self):
        """Padding and stride along convolution modes that no weight has act on the input directly,
        as a filter of length 1 would."""
        net = self.network
        if net.signal is None:
            return None
        lone = [c for c in net.conv if not net.weights_with[c]]
        if not lone or all(self.geometry.pad[c] == (0, 0) and self.geometry.stride[c] == 1 for c in lone):
            return None
        term = net.expr.inputs[net.signal]
        pad = [0] * (2 * len(term))
        slices = [slice(None)] * len(term)
        for c in lone:
            axis = term.index(c)
            pad[2 * (len(term) - 1 - axis): 2 * (len(term) - axis)] = self.geometry.pad[c]
            slices[axis] = slice(None, None, self.geometry.stride[c])
        return lambda x: F.pad(x, pad)[tuple(slices)]

    def _run(self, *operands: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = list(operands)
        for i, dims in self._reductions.items():
            nodes[i] = nodes[i].sum(dims)
        if self._prepare_signal is not None:
            nodes[0] = self._prepare_signal(nodes[0])
        for i, j, step, swapped in self._steps:
            a, b = nodes[i], nodes[j]
            nodes[i] = nodes[j] = None  # release intermediates as soon as they are used
            nodes.append(step.run(b, a) if swapped else step.run(a, b))
        return nodes[-1].permute(self._final_perm)

    def __call__(self, *operands: torch.Tensor) -> torch.Tensor:
        if len(operands) != len(self.shapes):
            raise ExpressionError(f"expression {self.text!r} was planned for {len(self.shapes)} operands, "
                                  f"got {len(operands)}")
        for i, (op, shape) in enumerate(zip(operands, self.shapes, strict=True)):
            if tuple(op.shape) != shape:
                raise ExpressionError(f"operand {i} has shape {tuple(op.shape)}, the plan is for {shape}")
        if self.checkpoint and torch.is_grad_enabled() and any(op.requires_grad for op in operands):
            return torch_checkpoint(self._run, *operands, use_reentrant=False)
        return self._run(*operands)

    def describe(self) -> str:
        """The plan: pairwise steps, their FLOPs, the largest intermediate, and the naive order's cost."""
        net = self.network
        lines = [f"  expression:            {self.text}",
                 f"  operands:              {', '.join(str(list(s)) for s in self.shapes)}",
                 f"  geometry:              {self.geometry.describe()}",
                 f"  strategy:              {self.optimize}"
                 f"{' (cost counts the backward pass)' if self.backward else ''}",
                 f"  FLOPs (this plan):     {self.flops:.4g}",
                 f"  FLOPs (naive, left to right): {self.naive_flops:.4g}  "
                 f"({self.naive_flops / max(self.flops, 1):.2f}x this plan)",
                 f"  FLOPs (rebuild kernel, then one conv): {self.rebuild_flops:.4g}  "
                 f"({self.rebuild_flops / max(self.flops, 1):.2f}x this plan)",
                 f"  largest intermediate:  {self.largest_intermediate:,} elements",
                 *(f"  measured {name}: {t * 1e3:.3f} ms" for name, t in self.timings.items()),
                 "  step  nodes      kind       FLOPs       result shape  expression"]
        for k, s in enumerate(self.plan):
            lines.append(f"  {k:>4}  {str(s.operands):<9}  {s.kind:<9}  {s.flops:>10.4g}  "
                         f"{str(list(s.shape)):>13}  {s.label}  -> node {net.n + k}")
        return "\n".join(lines)

    __str__ = describe


def _single_operand_reductions(expr: Expression) -> tuple[dict[int, tuple[int, ...]], Expression]:
    """Modes that appear in one operand only and not in the output are summed before anything else."""
    counts: dict[str, int] = {}
    for term in expr.inputs:
        for m in term:
            counts[m] = counts.get(m, 0) + 1
    reductions, terms = {}, []
    for i, term in enumerate(expr.inputs):
        dims = tuple(k for k, m in enumerate(term) if counts[m] == 1 and m not in expr.output)
        if dims:
            reductions[i] = dims
        terms.append(tuple(m for k, m in enumerate(term) if k not in dims))
    return reductions, Expression(tuple(terms), expr.output, expr.conv, expr.text)


def _key(value):
    return tuple(value) if isinstance(value, list) else value


def _optimize_key(optimize):
    """A strategy name, or an explicit path as a tuple of pairs (hashable, for the plan cache)."""
    return optimize if isinstance(optimize, str) else tuple(tuple(step) for step in optimize)


@lru_cache(maxsize=4096)
def _cached(text, shapes, stride, padding, dilation, weights_only, optimize, backward, checkpoint, device, dtype):
    return ConvEinsumExpression(text, shapes, stride, padding, dilation, weights_only, optimize, backward,
                                checkpoint, device, dtype)


def contract_expression(text: str, *shapes, stride=1, padding=0, dilation=1, weights_only: bool = False,
                        optimize: str = "optimal", backward: bool = False, checkpoint: bool = False,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                        ) -> ConvEinsumExpression:
    """Plan `text` for operands of these shapes (cached): returns a callable expression.

    optimize: "optimal" (fewest FLOPs, exact search), "measure" (time the candidate plans on `device`
    with `dtype` and keep the fastest), "naive", "rebuild", "greedy", or an explicit SSA path.
    backward: count the backward pass in the cost (and, with "measure", time forward + backward).
    checkpoint: recompute the intermediates in the backward pass instead of keeping them.
    """
    if optimize != "measure":  # device and dtype only matter to measurements
        device, dtype = "cpu", torch.float32
    return _cached(text, tuple(tuple(int(d) for d in s) for s in shapes), _key(stride), _key(padding),
                   _key(dilation), weights_only, _optimize_key(optimize), backward, checkpoint, str(device), dtype)


def conv_einsum(text: str, *operands: torch.Tensor, stride=1, padding=0, dilation=1, weights_only: bool = False,
                optimize: str = "optimal", checkpoint: bool = False) -> torch.Tensor:
    """Evaluate a conv_einsum expression; the plan is made on the first call for these shapes, then reused.
    The planner counts the backward pass when gradients are being recorded for any operand."""
    backward = torch.is_grad_enabled() and any(op.requires_grad for op in operands)
    expr = contract_expression(text, *(op.shape for op in operands), stride=stride, padding=padding,
                               dilation=dilation, weights_only=weights_only, optimize=optimize,
                               backward=backward, checkpoint=checkpoint, device=operands[0].device,
                               dtype=operands[0].dtype)
    return expr._run(*operands) if not expr.checkpoint else expr(*operands)


def pin_plans(plans: dict) -> None:
    """From now on in this process, take these measured plans (as `plan_cache.chosen()` recorded them)
    wherever they apply: a resumed run computes with the plans of the run it continues."""
    plan_cache.pin(plans)
    _cached.cache_clear()  # expressions planned before would keep their own


def forget_plans() -> None:
    """A new run in this process: no pinned plans, none recorded, every expression planned afresh (an
    expression kept from before would not be recorded in this run's checkpoints)."""
    plan_cache.forget()
    _cached.cache_clear()


def chosen_plans() -> dict:
    """The measured plans this process has used (portable key -> path): what a checkpoint records."""
    return plan_cache.chosen()
