"""A model's layers' inputs in forward order, without re-running the part of the network that is final.

Data-aware Layer-Decomp refits the student's layers one after the other, in the order the forward pass
calls them, and each layer's input must come from the student as refitted so far. Running the student
from the images for every layer costs a forward pass per layer (quadratic in depth). But a module call
that ended before the current layer was called has an output that no later refit can change: every
layer it depends on was called before it, hence is refitted already. So the outputs of those calls are
kept, over the whole pool, and the next pass returns them instead of running the modules: only the
modules between the last kept output and the current layer run.

Module calls are identified by module and call count (a module called twice, such as a shared ReLU, is
two calls), from one traced forward pass; when a kept call is skipped, the calls nested in it are counted
as made. Kept outputs are exact copies (no change of precision), so the inputs are bit for bit those of
running the student from the images; they live in RAM up to a memory budget (the latest calls first,
which save the most work), and what does not fit is computed again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..capture import capture

Call = tuple[str, int]  # (module name, how many earlier calls that module had in the pass)


@dataclass
class _Traced:
    start: int  # position of the call's start among every start and end of the pass
    end: int
    parent: Call | None  # the call this one is made in (None: the model's own forward)
    bytes_per_sample: int | None  # None: the output is not one batch-first tensor, so it is not kept
    inner: Counter = field(default_factory=Counter)  # calls made inside this one, per module


def _trace(model: nn.Module, input_size: tuple[int, ...], device) -> dict[Call, _Traced]:
    """Every module call of one forward pass (batch 2), with where it starts and ends."""
    calls: dict[Call, _Traced] = {}
    counts: Counter = Counter()
    stack: list[Call] = []
    clock = iter(range(1 << 62))

    def pre(name):
        def hook(_module, _args):
            call = (name, counts[name])
            counts[name] += 1
            for outer in stack:
                calls[outer].inner[name] += 1
            calls[call] = _Traced(next(clock), -1, stack[-1] if stack else None, None)
            stack.append(call)
        return hook

    def post(name):
        def hook(_module, _args, output):
            call = stack.pop()
            traced = calls[call]
            traced.end = next(clock)
            if isinstance(output, torch.Tensor) and output.dim() > 0 and output.shape[0] == 2:
                traced.bytes_per_sample = output[0].numel() * output.element_size()
        return hook

    with contextlib.ExitStack() as hooks:
        for name, module in model.named_modules():
            if name:
                hooks.callback(module.register_forward_pre_hook(pre(name)).remove)
                hooks.callback(module.register_forward_hook(post(name)).remove)
        was_training = model.training
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(2, *input_size, device=device))
        finally:
            model.train(was_training)
    return calls


class LayerInputs:
    """`inputs(name, batches)`: the input of layer `name` for each batch of the pool, in pool order; call
    it for the layers in the order the forward pass calls them."""

    def __init__(self, model: nn.Module, input_size: tuple[int, ...], samples: int, memory_budget: int):
        self.model, self.samples, self.budget = model, samples, memory_budget
        self.device = next(model.parameters()).device
        self.calls = _trace(model, input_size, self.device)
        self.kept: dict[Call, list[torch.Tensor]] = {}  # per batch, on the CPU

    def _bytes(self, calls) -> int:
        return sum(self.calls[c].bytes_per_sample * self.samples for c in calls)

    def inputs(self, name: str, batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        start = self.calls[(name, 0)].start
        finished = {c for c, t in self.calls.items() if t.end < start and t.bytes_per_sample is not None}
        frontier = self._outermost(finished)  # what the next layer will be able to skip
        record, room = [], self.budget - self._bytes(c for c in self.kept if c in frontier)
        for call in sorted(frontier - self.kept.keys(), key=lambda c: -self.calls[c].end):
            if self._bytes([call]) <= room:
                record.append(call)
                room -= self._bytes([call])
        skip = self._outermost(set(self.kept) & finished)
        recorded: dict[Call, list[torch.Tensor]] = {c: [] for c in record}
        for index, images in enumerate(batches):
            with self._substituted(skip, recorded, index):
                yield capture(self.model, images, inputs=(name,))[(name, "input")]
        self.kept = {c: v for c, v in (self.kept | recorded).items() if c in frontier}

    def _outermost(self, calls: set[Call]) -> set[Call]:
        """The calls of `calls` made in none of the others."""
        def inside(call):
            parent = self.calls[call].parent
            while parent is not None:
                if parent in calls:
                    return True
                parent = self.calls[parent].parent
            return False
        return {c for c in calls if not inside(c)}

    @contextlib.contextmanager
    def _substituted(self, skip: set[Call], recorded: dict[Call, list[torch.Tensor]], index: int):
        """Every module's forward wrapped: a skipped call returns its kept output (a copy: callers may
        change it in place), a recorded one keeps a copy of what it computed."""
        counts: Counter = Counter()
        originals = {}

        def wrap(name, module):
            forward = module.forward

            def wrapped(*args, **kwargs):
                call = (name, counts[name])
                counts[name] += 1
                if call in skip:
                    counts.update(self.calls[call].inner)
                    return self.kept[call][index].to(self.device, copy=True)
                output = forward(*args, **kwargs)
                if call in recorded:
                    recorded[call].append(output.detach().to("cpu", copy=True))
                return output
            return wrapped

        try:
            for name, module in self.model.named_modules():
                if name:
                    originals[module] = module.__dict__.get("forward")
                    module.forward = wrap(name, module)
            yield
        finally:
            for module, original in originals.items():
                if original is None:
                    del module.forward
                else:
                    module.forward = original
