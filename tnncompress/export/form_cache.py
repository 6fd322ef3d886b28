"""Deployment-form timings kept across runs, as the plan cache keeps measured plans.

Choosing each layer's deployment form times every candidate (dense, each factor chain) at each batch
size in the runtime that will run it: for ResNet-32 about 6 s per runtime, for ResNet-50 minutes. The
times depend on the layer (format, shape, ranks, geometry), its input shape, the candidates, the batch
sizes, the runtime and the machine, nothing else; so they are kept in a JSON file next to the plan
cache (`plans.forms.json`), keyed by all of that, and a later run on the same machine takes them from
there instead of timing again. Only the per-layer times are kept: the whole-model comparison that
guards the choice (choose.py, step 2) is timed in every run.

Trusted for speed only: an entry is used when it names exactly the candidates of this layer with a
finite positive time at each batch size; anything else is timed again. On and off with the plan cache
(`--no-plan-cache`, TNNCOMPRESS_PLAN_CACHE=off); safe to delete.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch

from .. import __version__
from ..einsum import plan_cache

SECTION = "forms"
_entries: dict[str, dict] | None = None
_loaded_from: Path | None = None


def location() -> Path | None:
    plans = plan_cache.location()
    return None if plans is None else plans.with_suffix(".forms.json")


def key(runtime: str, layer: torch.nn.Module, input_shape: tuple, batches: list[int], candidates: dict,
        threads: int) -> str:
    import onnxruntime

    return json.dumps([runtime, type(layer).__name__, layer.extra_repr(), list(input_shape), list(batches),
                       {name: path for name, path in sorted(candidates.items())}, platform.node(),
                       platform.machine(), threads, torch.__version__, onnxruntime.__version__, __version__])


def _load(path: Path) -> dict:
    global _entries, _loaded_from
    if _entries is None or _loaded_from != path:
        _entries, _loaded_from = plan_cache.read_section(path, SECTION), path
    return _entries


def lookup(entry: str, candidates, batches: list[int]) -> dict[str, dict[str, float]] | None:
    """candidate -> batch -> ms for this key, when the file holds a usable entry."""
    path = location()
    if path is None:
        return None
    found = _load(path).get(entry)
    wanted = {str(b) for b in batches}
    if not isinstance(found, dict) or set(found) != set(candidates):
        return None
    try:
        times = {name: {str(b): float(ms) for b, ms in found[name].items()} for name in candidates}
    except (AttributeError, TypeError, ValueError):
        return None
    if any(set(t) != wanted or not all(math.isfinite(v) and v > 0 for v in t.values()) for t in times.values()):
        return None
    return times


def store(entry: str, times: dict[str, dict[str, float]]) -> None:
    path = location()
    if path is not None:
        plan_cache.write_section(path, SECTION, _load(path), "tnncompress deployment-form timings; safe to delete",
                                 entry, times)
