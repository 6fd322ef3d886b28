"""The load stage: checkpoint file -> `nn.Module` with its architecture and input size resolved."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .. import models as zoo
from ..errors import UsageError, brief, opt
from ..limits import check
from .arch import ArchSpec, arch_kwargs, build_model, load_into, resolve_arch
from .checkpoint import Checkpoint, read_checkpoint

_TORCHVISION_INPUT = {"inception_v3": (3, 299, 299)}


@dataclass
class ModelRecord:
    """The loaded checkpoint as the report records it."""

    checkpoint: str
    sha256: str | None
    format: str  # the checkpoint's kind: state dict, pickled module, ...
    arch: str
    arch_how: str  # how the architecture was resolved
    input_size: list[int]
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadedModel:
    model: nn.Module
    arch: str  # "torchvision:resnet18", "tnncompress:resnet32", "pkg.mod:fn" or "pickled module"
    arch_how: str
    checkpoint: Checkpoint
    input_size: tuple[int, int, int]
    notes: list[str] = field(default_factory=list)
    arch_kwargs: dict = field(default_factory=dict)  # constructor arguments, to rebuild the architecture

    def describe(self) -> ModelRecord:
        return ModelRecord(str(self.checkpoint.path), self.checkpoint.sha256, self.checkpoint.kind, self.arch,
                           self.arch_how, list(self.input_size), self.notes + self.checkpoint.notes)


def parse_input_size(text: str, origin: str = opt("input_size")) -> tuple[int, int, int]:
    """C,H,W from `text`, bounded by the `input_elements` limit; `origin` names its source in errors."""
    try:
        dims = tuple(int(x) for x in str(text).replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise UsageError(f"{origin} {brief(text)}: expected C,H,W with positive integers, e.g. 3,224,224")
    check("input_elements", math.prod(dims), f"{origin} {','.join(map(str, dims))}")
    return dims  # type: ignore[return-value]


def _first_conv_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def default_input_size(spec: ArchSpec | None, model: nn.Module, metadata: dict[str, str],
                       source: str = "the checkpoint") -> tuple[int, int, int]:
    if metadata.get("input_size"):
        return parse_input_size(metadata["input_size"], f"{source}: its metadata input_size")
    channels = _first_conv_channels(model) or 3
    if spec is not None and spec.source == "tnncompress":
        _, h, w = zoo.get_entry(spec.name).input_size
        return (channels, h, w)
    if spec is not None and spec.source == "torchvision":
        return _TORCHVISION_INPUT.get(spec.name, (3, 224, 224))
    return (channels, 224, 224)


def load_model(path: str | Path, arch: str | None = None, trust: bool = False,
               input_size: str | tuple[int, int, int] | None = None, allow_nonfinite: bool = False) -> LoadedModel:
    """Read a checkpoint and return the model in eval mode on the CPU. `trust` allows what runs code:
    unpickling a whole module, and a metadata architecture given as module:factory."""
    ckpt = read_checkpoint(path, trust=trust, allow_nonfinite=allow_nonfinite)
    notes = []
    if ckpt.kind == "module":
        if arch:
            notes.append(f"arch {arch} ignored: the checkpoint holds a whole module")
        model, name, how, spec = ckpt.module, f"pickled {type(ckpt.module).__name__}", "whole module", None
        kwargs = {}
    else:
        spec, how = resolve_arch(arch, ckpt.state_dict, ckpt.metadata, trust=trust, source=str(ckpt.path))
        kwargs = arch_kwargs(spec, ckpt.state_dict)
        model = load_into(build_model(spec, kwargs=kwargs), ckpt.state_dict, spec)
        name = str(spec)
    if isinstance(input_size, str):
        input_size = parse_input_size(input_size)
    size = input_size or default_input_size(spec, model, ckpt.metadata, str(ckpt.path))
    return LoadedModel(model.eval(), name, how, ckpt, tuple(size), notes, kwargs)
