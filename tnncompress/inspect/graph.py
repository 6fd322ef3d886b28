"""The call graph of one forward pass: modules in the order they are first called, and which module was
next fed exactly another's output (a norm right after a layer, for instance)."""

from __future__ import annotations

import warnings

import torch
import torch.fx
from torch import nn

from ..formats import TensorizedLayer

NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # a module may ask to be one operation of the graph (the BQN's activation quantisers)
        return (isinstance(m, TensorizedLayer) or getattr(type(m), "traced_as_leaf", False)
                or super().is_leaf_module(m, qualname))


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """The model's torch.fx graph, with tensorial layers kept whole (as leaves)."""
    with warnings.catch_warnings():  # fx's tracer calls deprecated torch.jit helpers on the way
        warnings.simplefilter("ignore", FutureWarning)
        graph = _Tracer().trace(model)
        return torch.fx.GraphModule(model, graph)


def call_order(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[list[str], dict[str, str]]:
    """Module names in the order they are first called, and for each module the module that was next
    called on exactly its output (when one was)."""
    order: list[str] = []
    outputs: dict[int, str] = {}
    fed: dict[str, str] = {}

    def pre(name):
        def hook(_module, args):
            if name not in order:
                order.append(name)
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in outputs:
                fed.setdefault(outputs[id(args[0])], name)
        return hook

    keep = []  # every output stays alive during the pass, so that no id() is reused

    def post(name):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                outputs[id(output)] = name
                keep.append(output)
        return hook

    hooks = []
    for name, m in model.named_modules():
        if name:
            hooks += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return order, fed


def last_layer(model: nn.Module) -> str:
    """The name of the last layer with a kernel (the classifier, in a CNN), in definition order."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, TensorizedLayer))]
    if not names:
        raise ValueError("the model has no linear or convolution layer")
    return names[-1]


def norm_after(model: nn.Module, input_size: tuple[int, int, int], names: list[str]) -> dict[str, str | None]:
    """For each named module, the normalisation applied directly to its output, when there is one."""
    _, fed = call_order(model, input_size)
    modules = dict(model.named_modules())
    return {n: fed[n] if fed.get(n) is not None and isinstance(modules[fed[n]], NORMS) else None for n in names}
