"""The "measure" strategy: time the candidate plans on the real device and keep the fastest.

FLOPs are a proxy: a grouped or depthwise convolution runs far below a dense one's FLOP rate, and a
permutation costs time but no FLOPs. So the candidates (the FLOP-optimal plans for inference and for
training, left to right, rebuild-the-kernel, greedy) are each run on random operands of the planned
shapes, and the fastest median wins. Done once per set of shapes; the result is cached like any plan.
"""

from __future__ import annotations

import time

import torch

from . import paths


def _median_seconds(fn, min_time: float = 0.1, max_reps: int = 25) -> float:
    t0 = time.perf_counter()
    fn()  # warm-up: allocator, oneDNN primitive creation, CUDA kernels
    if time.perf_counter() - t0 < 0.2:
        fn()  # cheap enough for a second warm-up and more repetitions
        min_reps = 5
    else:
        min_reps = 3
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def fastest_path(expr, backward: bool, device, dtype) -> tuple[list[tuple[int, int]], dict[str, float]]:
    net = expr.network
    candidates: dict[str, list[tuple[int, int]]] = {}
    for name, path in (("optimal", paths.find_path(net, "optimal", backward)),
                       ("optimal-forward", paths.find_path(net, "optimal", False)),
                       ("rebuild", paths.rebuild_path(net.n, net.signal)),
                       ("naive", paths.naive_path(net.n)),
                       ("greedy", paths.find_path(net, "greedy"))):
        if path not in candidates.values():
            candidates[name] = path
    if len(candidates) == 1:
        return next(iter(candidates.values())), {}
    g = torch.Generator(device="cpu").manual_seed(0)
    operands = [torch.randn(s, generator=g, dtype=dtype).to(device) for s in expr.shapes]
    if backward:
        for op in operands:
            op.requires_grad_()
    timings = {}
    for name, path in candidates.items():
        expr._use_path(path)
        if backward:
            def run():
                out = expr._run(*operands)
                out.backward(torch.ones_like(out))
        else:
            def run():
                with torch.no_grad():
                    expr._run(*operands)
        timings[name] = _median_seconds(run)
    best = min(timings, key=timings.get)
    return candidates[best], timings
