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
        self._reduce_input = expr._reductions.get(0)
        self._prepare_signal = expr._prepare_signal
        self._final_perm = expr._final_perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {n: getattr(self, f"node{n}") for n in self._constants}
        if self._reduce_input is not None:
            x = x.sum(self._reduce_input)
        nodes[0] = self._prepare_signal(x) if self._prepare_signal is not None else x
        for i, j, step, swapped, node in self._steps:
            a, b = nodes.pop(i), nodes.pop(j)
            nodes[node] = step.run(b, a) if swapped else step.run(a, b)
        return nodes[node].permute(self._final_perm)
