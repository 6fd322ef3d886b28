"""How many CPU threads a run uses: the CPUs this process may run on, not the host's core count.

PyTorch and onnxruntime size their thread pools by the cores they see. In a container limited by a cgroup
CPU quota, or a process pinned to a few cores (taskset, a CI runner's slot), that is more threads than
CPUs: they spin and wait on each other, and a run on a shared machine slows many times over instead of in
proportion. So `run` sizes both by `usable_cpus()` (the affinity mask, capped by the cgroup quota, and
never above PyTorch's own default, its physical cores) unless `--threads N` says otherwise, or the
environment already chose (OMP_NUM_THREADS, which torchrun sets to one per process).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
_session_threads = 0  # what onnxruntime sessions get (0: onnxruntime's own default)
_torch_default: int | None = None  # PyTorch's own choice (physical cores it may use), seen before we change it


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 cpu.max, else v1 cfs quota / period), or None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            quota = int((root / folder / "cpu.cfs_quota_us").read_text())
            period = int((root / folder / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 or period <= 0 else quota / period
        except (OSError, ValueError):
            continue
    return None


def usable_cpus(root: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def use_threads(requested: int = 0) -> int:
    """Size PyTorch's intra-op pool and onnxruntime's sessions: `requested`, or (0) the environment's
    OMP_NUM_THREADS when set, else the usable CPUs shared among this machine's torchrun processes, never
    more than PyTorch's own default (its physical cores: hyperthreads slow compute-bound kernels).
    Returns the number used."""
    global _session_threads, _torch_default
    import torch

    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    if requested:
        n = requested
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        local = os.environ.get("LOCAL_WORLD_SIZE", "1")
        n = max(1, min(_torch_default, usable_cpus()) // (int(local) if local.isdigit() and int(local) > 0 else 1))
    torch.set_num_threads(n)
    _session_threads = n
    return n


def session_threads() -> int:
    """onnxruntime's intra-op threads for new sessions (0: its default, before `use_threads`)."""
    return _session_threads
