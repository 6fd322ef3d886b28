"""Wall-clock timing: medians of repeated runs (for choosing plans and forms, and for latency), and the
stopwatch a pipeline keeps of its stages.

Every measurement synchronises CUDA when it is in use, so a time covers the work and not its launch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], min_time: float = 0.1, max_reps: int = 25) -> float:
    """Median wall time of `fn` after warm-up, over at least 3 runs."""
    t0 = time.perf_counter()
    fn()  # warm-up: allocator, oneDNN primitive creation, CUDA kernels
    if time.perf_counter() - t0 < 0.2:
        fn()  # cheap enough for a second warm-up and more repetitions
        min_reps = 5
    else:
        min_reps = 3
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def interleaved_medians(runs: dict[str, Callable[[], object]], min_time: float = 0.2, max_rounds: int = 25,
                        min_rounds: int = 5, warm_up: bool = True, drop_above: float | None = None
                        ) -> dict[str, float]:
    """Median time of each candidate, timed round-robin so that the machine's drift (other processes,
    clock changes) hits every candidate alike instead of favouring whichever ran in a quiet moment.
    `warm_up=False` when each was just run at these shapes (a second pass). `drop_above`: a candidate
    slower than this many times the fastest in the first round is not run again (its one time stands):
    it cannot be the fastest, and timing it to a median is where the time went (a left-to-right factor
    chain of a ResNet-50 layer at batch 32: 20x the dense layer)."""
    for fn in runs.values() if warm_up else ():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    active = dict(runs)
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < min_time and rounds < max_rounds):
        for name, fn in active.items():
            t0 = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
        if rounds == 1 and drop_above is not None:
            fastest = min(ts[0] for ts in times.values())
            active = {name: fn for name, fn in active.items() if times[name][0] <= drop_above * fastest}
    return {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}


class Stopwatch:
    """Wall-clock and CPU seconds (of this process, all its threads) per named stage, and since the
    stopwatch was made."""

    def __init__(self) -> None:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - c0

    def total(self) -> float:
        return time.perf_counter() - self._start

    def total_cpu(self) -> float:
        return time.process_time() - self._cpu_start
