"""A planned expression with its weights fixed, for deployment.

The steps that involve weights only (merging two factors) do not depend on the input: they are done
once, here, in float64, and kept as buffers. What remains is the chain of convolutions the input goes
through, so a traced graph (ONNX) holds Conv / Reshape / Transpose nodes and constant initialisers,
never an Einsum over the weights repeated at every call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .contract import ConvEinsumExpression


class BoundExpression(nn.Module):
    def __init__(self, expr: ConvEinsumExpression, weights: Sequence[torch.Tensor]):
        super().__init__()
        net = expr.network
        if net.signal != 0:
            raise ValueError("only an expression whose operand 0 is the input can be bound to its weights")
        if len(weights) != net.n - 1:
            raise ValueError(f"expression {expr.text!r} takes {net.n - 1} weights, got {len(weights)}")
        dtype = weights[0].dtype
        nodes: dict[int, torch.Tensor] = {}
        # what each node is made of: the weights it joins (1-based operand ids) and its modes, in its order
        modes = {i: net.expr.inputs[i] for i in range(net.n)}
        joins = {i: frozenset([i]) for i in range(net.n)}
        for k, (i, j, step, _) in enumerate(expr._steps):
            modes[net.n + k], joins[net.n + k] = step.modes, joins[i] | joins[j]
        with torch.no_grad():
            for i, w in enumerate(weights, start=1):
                w = w.detach().to(torch.float64)
                nodes[i] = w.sum(expr._reductions[i]) if i in expr._reductions else w
            dynamic = {0}  # node ids that depend on the input
            self._steps = []
            for k, (i, j, step, swapped) in enumerate(expr._steps):
                node = net.n + k
                if i in dynamic or j in dynamic:
                    dynamic.add(node)
                    self._steps.append((i, j, step, swapped, node))
                else:
                    a, b = nodes.pop(i), nodes.pop(j)
                    nodes[node] = step.run(b, a) if swapped else step.run(a, b)
        if not self._steps:
            raise ValueError(f"expression {expr.text!r} has no step that involves the input")
        used = {n for i, j, *_ in self._steps for n in (i, j)} - dynamic
        for n in sorted(used):
            self.register_buffer(f"node{n}", nodes[n].to(dtype).contiguous())
        self._constants = sorted(used)
        # for computing the constants from the weights instead (`compute_constants`): per constant node, the
        # weights it joins with their modes (single-operand reductions applied), and its own modes
        self.origins = {n: ([(k, modes[k]) for k in sorted(joins[n])], modes[n]) for n in self._constants}
        self.reductions = {i: dims for i, dims in expr._reductions.items() if i}
        self.sources: nn.ModuleDict | None = None
        self._reduce_input = expr._reductions.get(0)
        self._prepare_signal = expr._prepare_signal
        self._final_perm = expr._final_perm

    def compute_constants(self, sources: dict[int, nn.Module]) -> None:
        """Compute each constant node by calling its module (sources[n]() gives the node in its modes'
        order) instead of reading it: for an exported graph that holds the weights, not what they make."""
        for n in self._constants:
            delattr(self, f"node{n}")
        self.sources = nn.ModuleDict({str(n): sources[n] for n in self._constants})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {n: self.sources[str(n)]() if self.sources is not None else getattr(self, f"node{n}")
                 for n in self._constants}
        if self._reduce_input is not None:
            x = x.sum(self._reduce_input)
        nodes[0] = self._prepare_signal(x) if self._prepare_signal is not None else x
        for i, j, step, swapped, node in self._steps:
            a, b = nodes.pop(i), nodes.pop(j)
            nodes[node] = step.run(b, a) if swapped else step.run(a, b)
        return nodes[node].permute(self._final_perm)
