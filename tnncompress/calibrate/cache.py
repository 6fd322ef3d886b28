"""The activation cache: per module, its input or its output over the calibration pool, recorded in one
pass of the teacher, so that data-aware Layer-Decomp and Seq-KD train against stored targets instead of
re-running the network upstream of every unit at every step.

Storage is float16 when it is exact enough for a least-squares target (a relative error under 1e-3
on the first batch and no value beyond float16's range), else float32; in RAM up to a memory budget,
else in memory-mapped files on disk; a cache that fits neither is refused, with the numbers, before
anything is written.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..capture import capture
from ..errors import LimitError, UsageError, brief, opt
from .pool import CalibrationPool

FP16_TOLERANCE = 1e-3


def parse_memory(text: str) -> int:
    """Bytes from "25%" (of this machine's RAM), "2G", "512M" or a number of bytes."""
    text = str(text).strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if text.endswith("%"):
            value = int(float(text[:-1]) / 100 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        elif text and text[-1] in units:
            value = int(float(text[:-1]) * units[text[-1]])
        else:
            value = int(float(text))
    except (ValueError, OverflowError):  # not a number, or not a finite one
        value = -1
    if value < 0:
        raise UsageError(f"{opt('cache_memory')} {brief(text)}: use bytes, 2G, 512M or a percentage of RAM such as "
                         "25%")
    return value


@dataclass
class CacheReport:
    """What the report says about the cache."""

    samples: int
    entries: int  # cached tensors (module inputs and outputs)
    bytes: int
    storage: str  # "memory" or "disk"
    dtypes: dict[str, str]
    seconds: float = 0.0


class ActivationCache:
    """`cache[(name, "input" | "output")]` is a [N, ...] tensor over the pool (float16 or float32)."""

    def __init__(self, teacher: nn.Module, pool: CalibrationPool, inputs: list[str], outputs: list[str],
                 memory_budget: int, directory: Path | None = None, batch_size: int = 128):
        started = time.perf_counter()
        self.keys = [(n, "input") for n in inputs] + [(n, "output") for n in outputs]
        size, shapes, self.dtypes = _layout(teacher, pool, inputs, outputs, batch_size)
        self.directory = None
        if size <= memory_budget:
            self.tensors = {k: torch.empty(shapes[k], dtype=self.dtypes[k]) for k in self.keys}
            storage = "memory"
        else:
            parent = Path(directory or tempfile.gettempdir())
            free = shutil.disk_usage(parent).free
            if size > free:
                raise LimitError(f"the activation cache of {len(pool)} calibration images needs {size / 2**30:.2f} "
                                 f"GiB; RAM allows {memory_budget / 2**30:.2f} GiB (cache_memory) and {parent} "
                                 f"has {free / 2**30:.2f} GiB free; lower calib_samples or raise cache_memory")
            self.directory = Path(tempfile.mkdtemp(prefix="tnncompress-cache-", dir=parent))
            self.tensors = {k: _memmap(self.directory / f"{i}.bin", shapes[k], self.dtypes[k])
                            for i, k in enumerate(self.keys)}
            storage = "disk"
        device = next(teacher.parameters()).device
        for start in range(0, len(pool), batch_size):
            got = capture(teacher, pool.images[start:start + batch_size].to(device), tuple(inputs), tuple(outputs))
            for key in self.keys:
                self.tensors[key][start:start + got[key].shape[0]] = got[key].to("cpu", self.dtypes[key])
        self.report = CacheReport(len(pool), len(self.keys), size, storage,
                                  {f"{n}:{w}": str(d).removeprefix("torch.") for (n, w), d in self.dtypes.items()},
                                  time.perf_counter() - started)

    def __getitem__(self, key: tuple[str, str]) -> torch.Tensor:
        return self.tensors[key]

    def close(self) -> None:
        self.tensors = {}
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def cache_bytes(teacher: nn.Module, pool: CalibrationPool, inputs: list[str], outputs: list[str]) -> int:
    """What a cache of these activations would hold, from one sample's shapes and precisions."""
    return _layout(teacher, pool, inputs, outputs, 8)[0]


def _layout(teacher: nn.Module, pool: CalibrationPool, inputs: list[str], outputs: list[str], batch_size: int):
    keys = [(n, "input") for n in inputs] + [(n, "output") for n in outputs]
    device = next(teacher.parameters()).device
    first = capture(teacher, pool.images[:min(batch_size, len(pool))].to(device), tuple(inputs), tuple(outputs))
    dtypes = {key: _storage_dtype(first[key]) for key in keys}
    shapes = {key: (len(pool), *first[key].shape[1:]) for key in keys}
    size = sum(math.prod(shapes[k]) * torch.tensor([], dtype=dtypes[k]).element_size() for k in keys)
    return size, shapes, dtypes


def _storage_dtype(sample: torch.Tensor) -> torch.dtype:
    x = sample.detach().float()
    if float(x.abs().max()) >= 60000:
        return torch.float32
    error = float((x.half().float() - x).norm() / x.norm().clamp_min(1e-30))
    return torch.float16 if error < FP16_TOLERANCE else torch.float32


def _memmap(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    array = np.memmap(path, dtype=np.float16 if dtype == torch.float16 else np.float32, mode="w+", shape=shape)
    return torch.from_numpy(array)
