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
from ..inspect import NORMS, call_order
from ..spectral.orthogonal import OrthogonalConv2d

STUDENT_LAYERS = (TensorizedLayer, OrthogonalConv2d)  # what compression put in the teacher's place


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


def find_units(model: nn.Module, input_size: tuple[int, int, int], unit: str = "layer") -> list[Unit]:
    order, fed = call_order(model, input_size)
    modules = dict(model.named_modules())
    layers = [n for n in order if isinstance(modules[n], STUDENT_LAYERS)]

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
