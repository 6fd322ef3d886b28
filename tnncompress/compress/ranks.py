"""Choosing each layer's ranks: by hand, or the largest that meet the rate.

`rate_by="params"`: parameters after / parameters before <= rate for the layer (bias counted on both
sides, as it is kept). `rate_by="flops"`: the layer's FLOPs per sample, by conv_einsum's plan at the
layer's input size, after / before <= rate. Within the budget, each format's documented rank rule picks
the ranks (see tnncompress.formats), then `Format.fill_budget` raises single ranks by one while the
budget (parameters or FLOPs) still allows, so that the budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..formats import Format, KernelShape, Ranks, Tensorization, get_format, tensorize
from ..inspect import LayerInfo
from ..limits import check, limit

RATE_BY = ("params", "flops")


@dataclass
class LayerPlan:
    name: str
    kind: str
    format: str
    shape: KernelShape
    tensorization: Tensorization | None
    ranks: Ranks | None  # None: this layer cannot meet the rate
    params_original: int
    params_compressed: int
    flops_original: int
    flops_compressed: int
    reason: str = ""



def kernel_shape(module: nn.Module) -> KernelShape:
    w = module.weight
    if isinstance(module, nn.Linear):
        return KernelShape(w.shape[0], w.shape[1], 1, 1)
    return KernelShape(w.shape[0], w.shape[1], w.shape[2], w.shape[3], module.groups)


def _geometry(module: nn.Module) -> dict:
    if isinstance(module, nn.Linear):
        return {}
    return {"stride": tuple(module.stride), "padding": module.padding if isinstance(module.padding, str)
            else tuple(module.padding), "dilation": tuple(module.dilation)}


def _input_hw(info: LayerInfo) -> tuple[int, int]:
    return (1, 1) if info.kind == "Linear" else (info.input[1], info.input[2])


def plan_layer(module: nn.Module, info: LayerInfo, fmt_name: str, rate: float | None = None,
               rate_by: str = "params", ranks: Ranks | None = None, modes: int = 3, multiple: int = 1) -> LayerPlan:
    """The layer's format and ranks: `ranks` as given, or those that meet `rate` (each a multiple of
    `multiple` where the rule chose at least that much)."""
    fmt: Format = get_format(fmt_name)
    shape = kernel_shape(module)
    tz = tensorize(shape.t, shape.in_channels, modes) if fmt.reshaped else None
    bias = 0 if module.bias is None else module.bias.numel()
    hw = _input_hw(info)

    def flops_of(r: Ranks) -> int:
        return fmt.flops(shape, tz, r, hw, **_geometry(module))

    plan = LayerPlan(info.name, info.kind, fmt_name, shape, tz, None, info.params, info.params, info.flops,
                     info.flops)
    if ranks is not None:
        chosen = fmt.normalise_ranks(shape, tz, ranks)
        given = ", ".join(f"{k}={v}" for k, v in chosen.items())
        check("factor_ratio", fmt.params(shape, tz, chosen), f"layer {info.name} ({fmt_name}, {given}): factor "
              "parameters", allowed=limit("factor_ratio") * shape.numel)
    elif rate_by == "params":
        budget = int(rate * info.params) - bias
        chosen = fmt.ranks_for_budget(shape, tz, budget) if budget > 0 else None
        chosen = _fill(fmt, shape, tz, chosen, budget, None, multiple) if chosen is not None else None
        if chosen is None:
            smallest = fmt.params(shape, tz, dict.fromkeys(fmt.rank_names(tz), 1)) + bias
            plan.reason = f"even rank 1 needs {smallest} parameters, the rate allows {int(rate * info.params)}"
            return plan
    else:
        chosen = _ranks_for_flops(fmt, shape, tz, flops_of, int(rate * info.flops))
        chosen = _fill(fmt, shape, tz, chosen, int(rate * info.flops), flops_of, multiple) if chosen else None
        if chosen is None:
            plan.reason = f"even rank 1 needs more than {rate:.0%} of the layer's FLOPs"
            return plan
    plan.ranks = chosen
    plan.params_compressed = fmt.params(shape, tz, chosen) + bias
    plan.flops_compressed = flops_of(chosen)
    return plan


def _fill(fmt: Format, shape: KernelShape, tz, ranks: Ranks, budget: int, cost_of, multiple: int) -> Ranks:
    """The rule's ranks with the budget spent: raised by one while they fit; or, with `multiple` > 1,
    each first rounded down to a multiple of it (a rank below it is kept) and raised to the next
    multiple while that fits."""
    if multiple > 1:
        ranks = {k: r if r < multiple else r - r % multiple for k, r in ranks.items()}
    return fmt.fill_budget(shape, tz, ranks, budget, cost_of, step=multiple)


def _ranks_for_flops(fmt: Format, shape: KernelShape, tz, flops_of, limit: int) -> Ranks | None:
    """The ranks for the largest parameter budget whose plan stays within `limit` FLOPs (bisection:
    FLOPs grow with the budget under every format's rank rule)."""
    lo, hi, best = 1, shape.numel, None
    while lo <= hi:
        mid = (lo + hi) // 2
        ranks = fmt.ranks_for_budget(shape, tz, mid)
        if ranks is not None and flops_of(ranks) <= limit:
            best, lo = ranks, mid + 1
        else:
            hi = mid - 1
    return best
