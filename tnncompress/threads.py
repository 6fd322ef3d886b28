"""How many CPU threads a run uses: the CPUs this process may run on, not the host's core count.

PyTorch and onnxruntime size their thread pools by the cores they see. In a container limited by a cgroup
CPU quota, or a process pinned to a few cores (taskset, a CI runner's slot), that is more threads than
CPUs: they spin and wait on each other, and a run on a shared machine slows many times over instead of in
proportion. So `run` sizes both by `usable_cpus()` (the affinity mask, capped by the cgroup quota, and
never above PyTorch's own default, its physical cores) unless `--threads N` says otherwise, or the
environment already chose (OMP_NUM_THREADS, which torchrun sets to one per process). A core another
process keeps busy when the run starts is left to it: PyTorch's OpenMP threads wait by spinning, and two
of them on one free core took 4.5x the time of one thread-free run where one thread takes 1.7x
(ResNet-50 Layer-Decomp with one of two cores taken; BENCHMARKS.md, "Fixed costs"). Passive waiting
(OMP_WAIT_POLICY=PASSIVE) fixes the loaded case as well but costs 2.8x on an idle machine, so it is not
used.
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


PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.1


def _cpu_times(path: Path) -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies since boot, from /proc/stat."""
    times = {}
    for line in path.read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in fields[:8]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle and iowait
            times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times


def free_cpus(cpus: set[int] | None = None, seconds: float = SAMPLE_SECONDS, path: Path = PROC_STAT) -> float | None:
    """How many of `cpus` (default: this process's) other work left idle over a short sample (this
    process sleeps through it), or None where /proc/stat cannot tell."""
    import time

    try:
        cpus = cpus if cpus is not None else set(os.sched_getaffinity(0))
        before = _cpu_times(path)
        time.sleep(seconds)
        after = _cpu_times(path)
    except (OSError, ValueError, AttributeError):
        return None
    free = 0.0
    for cpu in cpus & before.keys() & after.keys():
        busy, total = (a - b for a, b in zip(after[cpu], before[cpu], strict=True))
        free += 1.0 if total <= 0 else 1.0 - busy / total
    return free if cpus & before.keys() else None


def use_threads(requested: int = 0) -> int:
    """Size PyTorch's intra-op pool and onnxruntime's sessions: `requested`, or (0) the environment's
    OMP_NUM_THREADS when set, else the usable CPUs shared among this machine's torchrun processes, never
    more than PyTorch's own default (its physical cores: hyperthreads slow compute-bound kernels), nor
    more than the cores other processes leave idle when the run starts (`free_cpus`). Returns the
    number used."""
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
        free = free_cpus() if n > 1 and local == "1" else None
        if free is not None and round(free) < n:  # other processes hold some of the cores
            n = max(1, round(free))
    torch.set_num_threads(n)
    _session_threads = n
    return n


def session_threads() -> int:
    """onnxruntime's intra-op threads for new sessions (0: its default, before `use_threads`)."""
    return _session_threads
