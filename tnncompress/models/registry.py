"""A registry of named model constructors (the `tnncompress:<name>` architectures).

Each entry is a plain function returning an `nn.Module`. Constructors take keyword arguments
`num_classes` and `in_channels`, so a state dict can be matched against every entry by building it with
the shapes read off that state dict (see `tnncompress.io.arch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # the (C, H, W) the model was designed for
    description: str


MODELS: Registry[ModelEntry] = Registry("tnncompress model", order=lambda name, _: name)


def register(name: str, input_size: tuple[int, int, int], description: str):
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelEntry(name, fn, input_size, description))
        return fn

    return wrap


def list_models() -> list[str]:
    return MODELS.names()


def get_entry(name: str) -> ModelEntry:
    return MODELS.get(name)


def create_model(name: str, **kwargs) -> nn.Module:
    return get_entry(name).factory(**kwargs)
