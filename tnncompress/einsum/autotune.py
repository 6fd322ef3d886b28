"""The "measure" strategy: time the candidate plans on the real device and keep the fastest.

FLOPs are a proxy: a grouped or depthwise convolution runs far below a dense one's FLOP rate, and a
permutation costs time but no FLOPs. So the candidates (the FLOP-optimal plans for inference and for
training, left to right, rebuild-the-kernel, greedy, and the partial rebuild that first contracts the
factors holding the convolution modes into one small kernel) are each run on random operands of the planned
shapes, in turns, and the fastest median wins. Done once per set of shapes; the result is cached like
any plan.
"""

from __future__ import annotations

import copy

import torch

from ..timing import interleaved_medians
from . import paths

MEMORY_FACTOR = 8  # a candidate may hold at most this many times the leanest candidate's largest intermediate
MEMORY_FLOOR = 1 << 24  # ... or this many elements, whichever is larger


def candidate_paths(expr, backward: bool = False) -> dict[str, list[tuple[int, int]]]:
    """The distinct candidate plans of `expr` by name, without those whose largest intermediate
    dwarfs the leanest candidate's."""
    net = expr.network
    candidates: dict[str, list[tuple[int, int]]] = {}
    for name, path in (("optimal", paths.find_path(net, "optimal", backward)),
                       ("optimal-forward", paths.find_path(net, "optimal", False)),
                       ("rebuild", paths.rebuild_path(net, backward)),
                       ("naive", paths.naive_path(net.n)),
                       ("greedy", paths.find_path(net, "greedy")),
                       ("partial-rebuild", paths.partial_rebuild_path(net, backward))):
        if path is not None and path not in candidates.values():
            candidates[name] = path
    # Never try a plan whose largest intermediate dwarfs the leanest candidate's: left to right can
    # materialise tensors of tens of GB (reshaped formats at high rank) and would exhaust memory.
    largest = {name: paths.path_cost(net, path)[1] for name, path in candidates.items()}
    limit = max(MEMORY_FACTOR * min(largest.values()), MEMORY_FLOOR)
    return {name: path for name, path in candidates.items() if largest[name] <= limit}


def path_fits(expr, path) -> bool:
    """Whether `path` (e.g. read from a file) keeps within the memory rule the candidates obey."""
    largest = [paths.path_cost(expr.network, p)[1] for p in candidate_paths(expr).values()]
    return paths.path_cost(expr.network, path)[1] <= max(MEMORY_FACTOR * min(largest), MEMORY_FLOOR)


def fastest_path(expr, backward: bool, device, dtype) -> tuple[list[tuple[int, int]], dict[str, float]]:
    candidates = candidate_paths(expr, backward)
    if len(candidates) == 1:
        return next(iter(candidates.values())), {}
    g = torch.Generator(device="cpu").manual_seed(0)
    operands = [torch.randn(s, generator=g, dtype=dtype).to(device) for s in expr.shapes]
    if backward:
        for op in operands:
            op.requires_grad_()
    runs = {}
    for name, path in candidates.items():
        plan = copy.copy(expr)  # each candidate compiled side by side, so they can be timed in turns
        plan._use_path(path)
        runs[name] = _runner(plan, operands, backward)
    timings = interleaved_medians(runs)
    best = min(timings, key=timings.get)
    return candidates[best], timings


def _runner(plan, operands, backward: bool):
    if backward:
        def run():
            out = plan._run(*operands)
            out.backward(torch.ones_like(out))
    else:
        def run():
            with torch.no_grad():
                plan._run(*operands)
    return run
