"""Ranks the deployment runtime runs well: `--deploy-target onnxruntime-cpu | pytorch-cpu`.

A rate fixes a budget, not the ranks' arithmetic. CPU convolutions run in blocked layouts (8 or 16
channels): a factor chain whose ranks fill no block converts layouts around each of its convolutions, so
the same budget can run 1.5x faster with ranks rounded to multiples of 8 or 16 (`--rank-multiple`). Whether
it does depends on the network and the runtime, so here it is measured, before any Layer-Decomp: the
model with the ranks the rate picks and with the ranks rounded down to multiples of 8 and of 16 (the
budget refilled in those steps, never exceeded; ranks below the multiple kept) is built with random
factors (speed does not depend on their values), each with every layer its FLOP-optimal factor chain, and
the models are timed whole, against each other and the original (dense), in the target runtime at the
deployment batch sizes (export/choose.py, `time_whole_models`).

Whole models, not layers: a first version timed each layer alone and rounded where the layer gained; on
ResNet-32 it rounded 19 layers and ran 1.29x the original at batch 1 where rounding every layer ran 1.82x,
because a network whose every rank fills the block stays in the blocked layout from layer to layer, which
no one-layer graph shows.

A rounded model is kept only when it is faster than both the rate's and the dense model by `MARGIN`
(geometric mean over the batch sizes); of several that are, the one that keeps the most parameters:
speed is bought with accuracy, so no more of it than the margin asks. The rate's meaning is unchanged:
rounding only ever gives parameters back, and each rounded layer's plan says what it traded.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from ..formats import TensorizedLayer
from ..inspect import LayerInfo
from .ranks import LayerPlan, plan_layer

TARGETS = ("size", "onnxruntime-cpu", "pytorch-cpu")
RUNTIME = {"onnxruntime-cpu": "onnxruntime", "pytorch-cpu": "pytorch"}
MULTIPLES = (8, 16)
MARGIN = 0.9  # a rounded model must be at least 10% faster than the rate's ranks' and the dense model
log = logging.getLogger(__name__)

# (models by name, input size, batch sizes, runtime) -> name -> batch -> ms
Timer = Callable[[dict[str, nn.Module], tuple, list[int], str], dict[str, dict[str, float]]]


def _random_layer(module: nn.Module, plan: LayerPlan, generator: torch.Generator) -> nn.Module:
    """A tensorial layer of the plan's shapes with random factors (for timing only)."""
    layer = TensorizedLayer.shell(module, plan.format, plan.ranks, plan.tensorization)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return layer.eval()


def _chained(model: nn.Module, plans: list[LayerPlan], input_size: tuple) -> nn.Module:
    """`model` with each planned layer random factors of its plan, deployed as its FLOP-optimal chain."""
    from ..export.deploy import deployed, fixed_choices, tensorized_inputs

    student, generator = copy.deepcopy(model).eval(), torch.Generator().manual_seed(0)
    for plan in plans:
        if plan.ranks is not None:
            student.set_submodule(plan.name, _random_layer(model.get_submodule(plan.name), plan, generator))
    inputs = tensorized_inputs(student, input_size)
    return deployed(student, inputs, fixed_choices(student, inputs, "factors"))


def _geomean(times: dict[str, float]) -> float:
    return math.exp(sum(math.log(max(t, 1e-9)) for t in times.values()) / max(len(times), 1))


def _params(plans: list[LayerPlan]) -> int:
    return sum(p.params_compressed for p in plans if p.ranks is not None)


def speed_ranks(model: nn.Module, plans: list[LayerPlan], infos: dict[str, LayerInfo], rate: float, rate_by: str,
                modes: int, target: str, input_size: tuple, batches: list[int], timer: Timer | None = None
                ) -> list[LayerPlan]:
    """`plans`, or every layer's ranks rounded to the multiple whose model the target runtime runs fastest
    (see the module docstring). `timer` is export.choose.time_whole_models unless a test passes its own."""
    if target not in RUNTIME:
        return plans
    if timer is None:
        from ..export.choose import time_whole_models as timer
    variants: dict[str, list[LayerPlan]] = {"rate": plans}
    for m in MULTIPLES:
        rounded = [plan_layer(model.get_submodule(p.name), infos[p.name], p.format, rate, rate_by, modes=modes,
                              multiple=m) if p.ranks is not None else p for p in plans]
        if all(r.ranks is None for r in rounded) or any(
                [r.ranks for r in rounded] == [v.ranks for v in other] for other in variants.values()):
            continue  # nothing to compress at this multiple, or the same ranks as a variant already timed
        variants[f"x{m}"] = rounded
    if len(variants) == 1:
        return plans
    models = {"dense": model.eval(), **{name: _chained(model, v, input_size) for name, v in variants.items()}}
    ms = {name: _geomean(times) for name, times in timer(models, tuple(input_size), list(batches),
                                                           RUNTIME[target]).items()}
    bar = MARGIN * min(ms["rate"], ms["dense"])
    winners = [name for name in variants if name != "rate" and ms[name] < bar]
    if not winners:
        log.info("%s: the rate's ranks kept (chains %.3f ms, dense %.3f ms; rounded: %s)", target, ms["rate"],
                 ms["dense"], ", ".join(f"{k} {ms[k]:.3f} ms" for k in variants if k != "rate"))
        return plans
    best = max(winners, key=lambda name: _params(variants[name]))
    given_back = _params(plans) - _params(variants[best])
    log.info("%s: ranks rounded to multiples of %s: the model's chains %.3f ms against %.3f ms at the rate's ranks "
             "and %.3f ms dense; %s parameters given back", target, best[1:], ms[best], ms["rate"], ms["dense"],
             f"{given_back:,}")
    out = []
    for before, after in zip(plans, variants[best], strict=True):
        if after.ranks == before.ranks:
            out.append(before)
            continue
        why = (f"ranks rounded to multiples of {best[1:]} for {target}: the whole model's factor chains ran "
               f"{ms[best]:.3f} ms against {ms['rate']:.3f} ms at the rate's ranks and {ms['dense']:.3f} ms dense; "
               f"{before.params_compressed - after.params_compressed:,} parameters given back here")
        out.append(replace(after, reason=why))
    return out
