"""Nothing the user had is lost, and no run leaves debris (issue 10, items 4, 5 and 6)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tnncompress.pipeline import Recipe, run
from tnncompress.pipeline.staging import output_lock
from tnncompress.train.hooks import observe_checkpoints

from .conftest import FAST, SMALL_CNN, invoke

KD = ["-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--kd", "e2e", "--kd-steps", "12", "--set", "kd_plan=optimal",
      "--eval-limit", "200", "--kd-eval-limit", "100", "--set", "kd_checkpoint_every=4"]


def test_force_never_deletes_the_directory_holding_an_input(tmp_path):
    ckpt_dir = tmp_path / "models"
    ckpt_dir.mkdir()
    ckpt = ckpt_dir / "small.safetensors"
    shutil.copy(SMALL_CNN, ckpt)
    for out in (ckpt_dir, tmp_path):  # the directory itself, and an ancestor of it
        result = invoke("run", ckpt, "-f", "cp", "-r", "0.2", "--out", out, "--force", *FAST)
        assert result.exit_code == 2 and "an input of this run" in result.output, result.output
    assert ckpt.read_bytes() == SMALL_CNN.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_out_dot_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", ".", "--force", *FAST)
    assert result.exit_code == 2 and "current directory" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"] and not list(here.iterdir())


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_an_interrupt_during_export_resumes_without_distilling_again(tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = dict(checkpoint=str(SMALL_CNN), format="cp", rate=0.2, data="fashion-mnist", kd="e2e", kd_steps=12,
                kd_plan="optimal", latency=False, deploy_form="flops", eval_limit=200, kd_eval_limit=100,
                out=str(out))
    pipeline = importlib.import_module("tnncompress.export.stage")

    real = pipeline.write_compressed

    def stop(*a, **k):
        raise _Stop

    monkeypatch.setattr(pipeline, "write_compressed", stop)
    with pytest.raises(_Stop):
        run(Recipe.of(**args).check())
    assert (tmp_path / ".out.partial" / "checkpoints" / "distill.pt").is_file() and not out.exists()
    monkeypatch.setattr(pipeline, "write_compressed", real)
    saved = []
    with observe_checkpoints(saved.append):
        result = run(Recipe.of(**args).check(), resume=True)
    assert saved == []  # no training step ran: every phase was complete
    assert result.report.distillation.updates == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # checkpoints gone once the output is in place


def test_losing_the_race_for_the_output_leaves_no_staging(tmp_path, monkeypatch):
    out = tmp_path / "out"
    pipeline = importlib.import_module("tnncompress.export.stage")

    real = pipeline.write_compressed

    def racing(directory, *a, **k):  # another process creates --out while this run works
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
        return real(directory, *a, **k)

    monkeypatch.setattr(pipeline, "write_compressed", racing)
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", out, *FAST)
    assert result.exit_code == 2 and "exists" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", out, *FAST)
        assert result.exit_code == 2 and f"(PID {os.getpid()} on" in result.output
        assert "is writing" in result.output and "interrupted run is kept" not in result.output
    # a lock left by a dead process (its flock went with it) and old staging directories are stale
    (tmp_path / ".out.lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": "gone", "started": "never"}))
    (tmp_path / f".out.partial-{2 ** 22 + 1}").mkdir()
    result = invoke("run", SMALL_CNN, "-f", "cp", "-r", "0.2", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _start(args, cwd):
    env = dict(os.environ, TNNCOMPRESS_PROGRESS="0")
    return subprocess.Popen([sys.executable, "-m", "tnncompress.cli.app", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, signum):
    # a distillation is kept for --resume ...
    process = _start(["run", SMALL_CNN, *KD, "--kd-steps", "400", "--out", "kd"], tmp_path)
    _wait_for(tmp_path / ".kd.partial" / "checkpoints" / "distill.pt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "--resume" in stderr and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kd.partial"]  # no lock, no other debris
    # ... a run without distillation leaves nothing
    process = _start(["run", SMALL_CNN, "-f", "mtr", "-r", "0.5", "--out", "plain", "--no-latency"], tmp_path)
    _wait_for(tmp_path / ".plain.lock", process)
    time.sleep(1.0)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kd.partial"]
