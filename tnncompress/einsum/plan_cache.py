"""Measured plans kept across runs, as cuDNN's benchmark cache keeps its algorithm choices.

Timing the candidate plans of every layer (the "measure" strategy, autotune.py) costs a run seconds to
a minute before its first useful step, and a run measured on a busy moment can pick other plans, hence
other floating-point sums, than the same run an hour earlier. So the plan each measurement picks is kept
in a JSON file keyed by everything the timing depended on (the expression, its shapes and geometry, the
backward flag, host and device, dtype, thread count, torch and tnncompress versions), and the next run
on the same machine takes it from there.

The file is only ever trusted for speed: an entry is used only if it is a valid path for its expression
and obeys the memory rule every candidate obeys (`autotune.path_fits`); anything unreadable is ignored
(and overwritten by the next measurement). It is safe to delete. Writes are atomic (a concurrent run may
drop another's newest entries, which costs a measurement, nothing else).

Every plan a process measured or read is also remembered by a key without the machine in it
(`portable_key`): `chosen()` is what a checkpoint records and a report lists, and `pin(plans)` makes a
resumed process take those same plans, whatever this machine's timings or cache say, so that a resumed
run computes what the interrupted one would have, bit for bit.

Location: $TNNCOMPRESS_PLAN_CACHE (a file; "off" disables it), else $XDG_CACHE_HOME/tnncompress/plans.json
(~/.cache/...). `run --no-plan-cache` disables it for one run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import torch

from .. import __version__
from ..errors import UsageError

ENV = "TNNCOMPRESS_PLAN_CACHE"
MAX_BYTES = 16 << 20  # a larger file is not read (and is replaced on the next write)
MAX_ENTRIES = 20_000  # the oldest are dropped beyond this
log = logging.getLogger(__name__)

_enabled = True
_entries: dict[str, list] | None = None  # loaded lazily, once per process and location
_loaded_from: Path | None = None
_pinned: dict[str, list] = {}  # portable key -> path: a resumed run's plans, taken before anything else
_chosen: dict[str, list] = {}  # portable key -> path: every measured plan this process has used


def location() -> Path | None:
    """The cache file, or None when caching is off."""
    if not _enabled:
        return None
    value = os.environ.get(ENV, "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # no home directory to be found: no cache, never an error
            return None
    return Path(base) / "tnncompress" / "plans.json"


def set_enabled(enabled: bool) -> None:
    """`--plan-cache on|off` for this process."""
    global _enabled
    _enabled = enabled


def key(text: str, shapes, stride, padding, dilation, weights_only: bool, backward: bool, device, dtype) -> str:
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # the host too: a cache in a home directory shared between machines must not carry one CPU's timings
    return json.dumps([text, [list(s) for s in shapes], repr(stride), repr(padding), repr(dilation), weights_only,
                       backward, platform.node(), platform.machine(), name, str(dtype), torch.get_num_threads(),
                       torch.__version__, __version__])


def portable_key(text: str, shapes, stride, padding, dilation, weights_only: bool, backward: bool, dtype) -> str:
    """What a plan is a plan for, without the machine that timed it."""
    return json.dumps([text, [list(s) for s in shapes], repr(stride), repr(padding), repr(dilation), weights_only,
                       backward, str(dtype)])


def pin(plans: dict) -> None:
    """Take these plans (portable key -> path, as `chosen()` gives them) from now on in this process."""
    if isinstance(plans, dict):
        _pinned.update({k: v for k, v in plans.items() if isinstance(k, str) and isinstance(v, list)})


def pinned(portable: str) -> list[tuple[int, int]] | None:
    return _pairs(_pinned.get(portable))


def remember(portable: str, plan: list[tuple[int, int]]) -> None:
    _chosen[portable] = [list(step) for step in plan]


def chosen() -> dict[str, list]:
    """Every measured plan this process has used (portable key -> path)."""
    return {k: [list(step) for step in v] for k, v in _chosen.items()}


def forget() -> None:
    """Drop the pinned and remembered plans (a new run in the same process)."""
    _pinned.clear()
    _chosen.clear()


def _pairs(found) -> list[tuple[int, int]] | None:
    if not isinstance(found, list) or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in found):
        return None
    try:
        return [(int(i), int(j)) for i, j in found]
    except (TypeError, ValueError):
        return None


def read_section(path: Path, section: str) -> dict:
    """The `section` mapping of a cache file; empty when the file is missing, too large or unreadable."""
    try:
        if path.is_file() and path.stat().st_size <= MAX_BYTES:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get(section), dict):
                return data[section]
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.debug("cache %s not read: %s", path, exc)
    return {}


def write_section(path: Path, section: str, entries: dict, about: str, key: str, value) -> None:
    """`entries` with `key` set to `value` (last: the newest survive the trim to MAX_ENTRIES), written
    atomically as the file's `section`; failures only cost the caching."""
    from ..io.files import write_text  # here: the io package imports model loading, which imports this

    entries.pop(key, None)
    entries[key] = value
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"about": about, section: entries}))
    except (OSError, ValueError, UsageError) as exc:  # UsageError: the file is a link or a directory
        log.debug("cache %s not written: %s", path, exc)


def _load(path: Path) -> dict[str, list]:
    global _entries, _loaded_from
    if _entries is None or _loaded_from != path:
        _entries, _loaded_from = read_section(path, "plans"), path
    return _entries


def lookup(entry_key: str) -> list[tuple[int, int]] | None:
    """The cached path for this key, as pairs (unchecked: the caller validates it), or None."""
    path = location()
    if path is None:
        return None
    return _pairs(_load(path).get(entry_key))


def store(entry_key: str, plan: list[tuple[int, int]]) -> None:
    """Record a measured plan (the file is rewritten atomically; failures only cost the caching)."""
    path = location()
    if path is None:
        return
    write_section(path, "plans", _load(path), "tnncompress measured conv_einsum plans; safe to delete", entry_key,
                  [list(step) for step in plan])
