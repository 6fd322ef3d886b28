"""Timing helpers shared by the benchmarks: warm-up, then the median of repeated runs."""

from __future__ import annotations

import platform
import statistics
import time
from datetime import date

import torch


def median_ms(fn, min_time: float = 0.3, min_reps: int = 3, max_reps: int = 15) -> float:
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 < 0.2:
        fn()  # a second warm-up when it is cheap
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def today() -> str:
    return date.today().isoformat()
