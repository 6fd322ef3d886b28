"""Global rank allocation: one budget for all compressed layers, spent where it buys the most.

Each layer offers candidates: its format's ranks at a ladder of budgets, and staying dense. A
candidate's cost is its parameters (or FLOPs); its damage is w_l * e^2, where e is the relative output
error of the layer after data-aware refitting on the calibration pool (calibrate/moments.py), and w_l
the layer's sensitivity: the logits' squared error when that layer alone is compressed, per unit of
its e^2. Starting from every layer's floor, the allocator repeatedly takes the upgrade (to any larger
candidate of one layer) with the largest damage removed per parameter spent that still fits the
budget: the greedy rule for this multiple-choice knapsack, exact on convex damage curves.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..calibrate import CalibrationPool, collect_moments
from ..capture import capture
from ..errors import UsageError
from ..formats import TensorizedLayer
from ..inspect import norm_after
from .config import CompressConfig
from .data_aware import refit
from .ranks import LayerPlan, plan_layer
from .select import LayerChoice, Selection

log = logging.getLogger(__name__)
LADDER = (0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.45)  # budgets, as fractions of the layer


@dataclass(frozen=True)
class Candidate:
    cost: int  # parameters (or FLOPs) of the layer with these ranks
    damage: float  # weighted squared output error; 0 for the dense layer
    ranks: dict | None  # None: the layer stays dense
    error: float = 0.0  # relative output error after refitting


def greedy_allocate(curves: dict[str, list[Candidate]], budget: float) -> dict[str, int]:
    """The index of the chosen candidate of each layer. `curves[l]` lists the layer's candidates by
    increasing cost; the first is its floor, the last its cap. Raises UsageError when the floors alone
    exceed the budget."""
    chosen = {layer: 0 for layer in curves}
    spent = sum(c[0].cost for c in curves.values())
    if spent > budget:
        raise UsageError(f"the smallest ranks of the selected layers need {spent:,} parameters, the budget allows "
                         f"{int(budget):,}")
    while True:
        best = None
        for layer, candidates in curves.items():
            now = candidates[chosen[layer]]
            for j in range(chosen[layer] + 1, len(candidates)):
                extra = candidates[j].cost - now.cost
                gain = now.damage - candidates[j].damage
                if gain <= 0 or spent + extra > budget:
                    continue
                ratio = gain / max(extra, 1)
                if best is None or ratio > best[0]:
                    best = (ratio, layer, j, extra)
        if best is None:
            return chosen
        _, layer, j, extra = best
        chosen[layer], spent = j, spent + extra


def _ladder(module: nn.Module, info, fmt_name: str, config: CompressConfig, dense_allowed: bool) -> list[LayerPlan]:
    plans, seen = [], set()
    for fraction in LADDER:
        plan = plan_layer(module, info, fmt_name, fraction, config.rate_by, modes=config.modes,
                          multiple=config.rank_multiple)
        if plan.ranks is not None and tuple(sorted(plan.ranks.items())) not in seen:
            seen.add(tuple(sorted(plan.ranks.items())))
            plans.append(plan)
    if dense_allowed:
        dense = plan_layer(module, info, fmt_name, 1.0, config.rate_by, modes=config.modes)
        dense.ranks, dense.reason = None, "left dense: the best use of the budget"
        plans.append(dense)
    return plans


def _cost(plan: LayerPlan, rate_by: str) -> int:
    if plan.ranks is None:
        return plan.params_original if rate_by == "params" else plan.flops_original
    return plan.params_compressed if rate_by == "params" else plan.flops_compressed


def global_plans(teacher: nn.Module, choices: list[LayerChoice], config: CompressConfig, pool: CalibrationPool,
                 input_size: tuple[int, int, int], probe: int = 512, seed: int = 0) -> list[LayerPlan]:
    """Plans for the selected layers under the total budget rate x (their dense parameters or FLOPs)."""
    selected = [c for c in choices if c.status == Selection.COMPRESS]
    names = [c.info.name for c in selected]
    norms = norm_after(teacher, input_size, names)
    probe_images = pool.images[:probe]
    with torch.no_grad():
        reference = teacher(probe_images)
    curves, ladders, budget = {}, {}, 0.0
    for choice in selected:
        name, module = choice.info.name, teacher.get_submodule(choice.info.name)
        ladder = _ladder(module, choice.info, config.format, config, dense_allowed=True)
        budget += config.rate * (choice.info.params if config.rate_by == "params" else choice.info.flops)
        geometry = TensorizedLayer.from_layer(module, config.format, ladder[0].ranks, ladder[0].tensorization)
        target = norms[name] or name
        pairs = ((got[(name, "input")], got[(target, "output")])
                 for got in (capture(teacher, batch, inputs=(name,), outputs=(target,)) for batch in pool.batches(128)))
        moments = collect_moments(geometry, pairs)
        fitted = []
        for plan in ladder:
            if plan.ranks is None:
                fitted.append((plan, None, None, 0.0))
                continue
            layer = TensorizedLayer.from_layer(module, plan.format, plan.ranks, plan.tensorization, seed=seed,
                                               decomposer=config.decomposer).double()
            norm = copy.deepcopy(teacher.get_submodule(norms[name])).double() if norms[name] else None
            result = refit(name, layer, norm, moments)
            fitted.append((plan, layer, norm, result.error_after))
        weight = _sensitivity(teacher, name, norms[name], fitted, config.rate, probe_images, reference)
        curves[name] = [Candidate(_cost(p, config.rate_by), weight * e * e, p.ranks, e) for p, _, _, e in fitted]
        ladders[name] = [p for p, _, _, _ in fitted]
        log.debug("%s: sensitivity %.3g, errors %s", name, weight, [round(e, 3) for _, _, _, e in fitted])
    chosen = greedy_allocate(curves, budget)
    plans = []
    for name in names:
        plan, candidate = ladders[name][chosen[name]], curves[name][chosen[name]]
        if plan.ranks is not None:
            plan.reason = (f"global allocation: rate {plan.params_compressed / plan.params_original:.3f}, output error "
                           f"{candidate.error:.3f} after refitting, damage {candidate.damage:.3g}")
        plans.append(plan)
    return plans


def _sensitivity(teacher: nn.Module, name: str, norm_name: str | None, fitted, rate: float, images: torch.Tensor,
                 reference: torch.Tensor) -> float:
    """Logit squared error when `name` alone is replaced by its candidate nearest the uniform rate, per
    unit of that candidate's squared output error."""
    usable = [f for f in fitted if f[1] is not None]
    plan, layer, norm, error = min(usable, key=lambda f: abs(f[0].params_compressed / f[0].params_original - rate))
    probe = copy.deepcopy(teacher)
    probe.set_submodule(name, layer.float())
    if norm is not None:
        probe.set_submodule(norm_name, norm.float())
    with torch.no_grad():
        damage = float(((probe(images) - reference) ** 2).mean())
    return damage / max(error * error, 1e-12)

