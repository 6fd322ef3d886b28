"""The units Seq-KD distils one after another, found by watching one forward pass of the student.

A layer unit is one compressed layer plus the normalisation applied directly to its output (the next
module called, fed with exactly that tensor). A block unit is the residual block holding compressed
layers: the nearest ancestor that is an element of an nn.Sequential (`layer1.0` in a ResNet); a layer
with no such ancestor is its own unit. Units are ordered by when their input is first used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..formats import TensorizedLayer

NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


@dataclass
class Unit:
    name: str  # the module whose input and output are matched (a layer or a block)
    layers: list[str]  # the compressed layers it trains
    norms: list[str]  # the normalisations right after them, also trained
    output: str  # the module whose output is matched: the norm after a layer, else `name`

    def trained(self) -> list[str]:
        return self.layers + self.norms


class UnitModule(nn.Module):
    """A layer unit as one module (the layer, then its norm), so that it can be trained, and wrapped
    in DistributedDataParallel, on its own. It shares the student's modules; it copies nothing."""

    def __init__(self, layer: nn.Module, norm: nn.Module | None):
        super().__init__()
        self.layer, self.norm = layer, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        return self.norm(y) if self.norm is not None else y


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


def find_units(model: nn.Module, input_size: tuple[int, int, int], unit: str = "layer") -> list[Unit]:
    order, fed = call_order(model, input_size)
    modules = dict(model.named_modules())
    layers = [n for n in order if isinstance(modules[n], TensorizedLayer)]

    def norm_after(name: str) -> str | None:
        nxt = fed.get(name)
        return nxt if nxt is not None and isinstance(modules[nxt], NORMS) else None

    units: list[Unit] = []
    if unit == "layer":
        for n in layers:
            norm = norm_after(n)
            units.append(Unit(n, [n], [norm] if norm else [], norm or n))
        return units
    by_block: dict[str, Unit] = {}
    for n in layers:
        block = _block_of(n, modules)
        norm = norm_after(n)
        if block is None:
            units.append(Unit(n, [n], [norm] if norm else [], norm or n))
            continue
        if block not in by_block:
            by_block[block] = Unit(block, [], [], block)
            units.append(by_block[block])
        by_block[block].layers.append(n)
        if norm and norm.startswith(block + "."):
            by_block[block].norms.append(norm)
    return units


def _block_of(name: str, modules: dict[str, nn.Module]) -> str | None:
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent, candidate = ".".join(parts[: i - 1]) if i > 1 else "", ".".join(parts[:i])
        if parent and isinstance(modules[parent], nn.Sequential | nn.ModuleList):
            return candidate
    return None


def unit_module(model: nn.Module, unit: Unit) -> nn.Module:
    """The module that maps the unit's input to its matched output."""
    if unit.name in unit.layers:  # a layer unit
        norm = model.get_submodule(unit.norms[0]) if unit.norms else None
        return UnitModule(model.get_submodule(unit.name), norm)
    return model.get_submodule(unit.name)
