"""Activations of named modules, captured by hooks during one forward pass that stops as soon as
everything asked for has been seen (the rest of the network is not computed)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class _Done(Exception):
    """Raised from a hook to end a forward pass once every wanted activation is seen."""


@torch.no_grad()
def capture(model: nn.Module, x: torch.Tensor, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ()
            ) -> dict[tuple[str, str], torch.Tensor]:
    """{(name, "input"): the first positional input, (name, "output"): the output} of the named modules
    when `model` runs on `x`."""
    got: dict[tuple[str, str], torch.Tensor] = {}
    wanted = {(n, "input") for n in inputs} | {(n, "output") for n in outputs}

    def keep(key, value):
        got.setdefault(key, value)
        if wanted <= got.keys():
            raise _Done

    with contextlib.ExitStack() as stack:
        for name in inputs:
            handle = model.get_submodule(name).register_forward_pre_hook(
                lambda _m, args, name=name: keep((name, "input"), args[0]))
            stack.callback(handle.remove)
        for name in outputs:
            handle = model.get_submodule(name).register_forward_hook(
                lambda _m, _a, out, name=name: keep((name, "output"), out))
            stack.callback(handle.remove)
        try:
            model(x)
        except _Done:
            pass
    missing = wanted - got.keys()
    if missing:
        raise RuntimeError(f"not called in the forward pass: {', '.join(sorted(n for n, _ in missing))}")
    return got
