"""Threads follow what the process may use (affinity, cgroup quota), or --threads, in PyTorch and in the
onnxruntime sessions alike."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tnncompress import threads
from tnncompress.export import to_onnx
from tnncompress.export.onnx_graph import session


@pytest.fixture()
def restore():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads._session_threads = 0


def _cgroup(tmp_path, v2=None, v1=None):
    tmp_path.mkdir(parents=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(str(v1[0]))
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(str(v1[1]))
    return tmp_path


def test_the_cgroup_quota_is_read_from_v2_and_v1(tmp_path):
    assert threads.cgroup_quota(_cgroup(tmp_path / "a", v2="150000 100000\n")) == 1.5
    assert threads.cgroup_quota(_cgroup(tmp_path / "b", v2="max 100000\n")) is None
    assert threads.cgroup_quota(_cgroup(tmp_path / "c", v1=(50000, 100000))) == 0.5
    assert threads.cgroup_quota(_cgroup(tmp_path / "d", v1=(-1, 100000))) is None
    assert threads.cgroup_quota(tmp_path / "missing") is None
    assert threads.cgroup_quota(_cgroup(tmp_path / "e", v2="garbage")) is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux CPU affinity")
def test_usable_cpus_is_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert threads.usable_cpus(tmp_path / "none") == 8
    assert threads.usable_cpus(_cgroup(tmp_path / "a", v2="250000 100000")) == 3  # 2.5 CPUs: 3 threads
    assert threads.usable_cpus(_cgroup(tmp_path / "b", v2="20000 100000")) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert threads.usable_cpus(_cgroup(tmp_path / "c", v2="max 100000")) == 1


def _stat(path, rows):
    """/proc/stat with these (busy, idle) jiffies per CPU."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in
                                             enumerate(rows)]
    path.write_text("\n".join(lines + ["intr 0", "ctxt 0"]) + "\n")


def test_free_cpus_are_what_other_processes_leave_idle(tmp_path, monkeypatch):
    import time

    stat = tmp_path / "stat"
    _stat(stat, [(100, 100), (100, 100), (0, 50)])
    # while this process sleeps: cpu0 fully busy, cpu1 half busy, cpu2 idle (and not ours)
    monkeypatch.setattr(time, "sleep", lambda _s: _stat(stat, [(200, 100), (150, 150), (0, 150)]))
    assert threads.free_cpus({0, 1}, seconds=0, path=stat) == pytest.approx(0.5)
    assert threads.free_cpus({0}, seconds=0, path=tmp_path / "missing") is None


def test_a_core_another_process_keeps_busy_is_left_to_it(restore, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "_torch_default", 2)
    monkeypatch.setattr(threads, "free_cpus", lambda *a, **k: 1.1)  # a neighbour spins on one of the two
    assert threads.use_threads(0) == 1
    monkeypatch.setattr(threads, "free_cpus", lambda *a, **k: 1.7)
    assert threads.use_threads(0) == 2
    monkeypatch.setattr(threads, "free_cpus", lambda *a, **k: 0.1)  # everything busy: still one thread
    assert threads.use_threads(0) == 1
    assert threads.use_threads(2) == 2  # --threads wins


def test_use_threads_sizes_torch_and_onnxruntime(restore, monkeypatch, small_model):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 6)
    monkeypatch.setattr(threads, "free_cpus", lambda *a, **k: None)  # nothing known about other processes
    monkeypatch.setattr(threads, "_torch_default", 8)  # PyTorch's own choice: 8 physical cores
    assert threads.use_threads(0) == 6 and torch.get_num_threads() == 6
    monkeypatch.setattr(threads, "_torch_default", 4)  # 6 usable logical CPUs on 4 cores: 4
    assert threads.use_threads(0) == 4
    monkeypatch.setattr(threads, "_torch_default", 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes on this machine share the CPUs
    assert threads.use_threads(0) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the environment chose
    assert threads.use_threads(0) == 1
    assert threads.use_threads(2) == 2 and torch.get_num_threads() == 2  # --threads wins
    sess = session(to_onnx(small_model, (1, 28, 28)))
    assert sess.get_session_options().intra_op_num_threads == 2


@pytest.mark.slow
def test_a_run_records_its_threads(restore, tmp_path):
    from safetensors.torch import save_file
    from tnncompress.cli.app import app
    from typer.testing import CliRunner

    from tnncompress.models import create_model

    torch.manual_seed(0)
    save_file(create_model("small_cnn").state_dict(), tmp_path / "m.safetensors")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.safetensors"), "--arch", "tnncompress:small_cnn",
                                      "-r", "0.2", "--threads", "1", "--no-latency", "--deploy-form", "flops", "-q",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["threads"] == 1
    assert "1 CPU threads" in (out / "report.md").read_text()
