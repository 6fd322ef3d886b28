"""torchrun with two CPU processes (gloo) trains the student one process trains, and writes once."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tnncompress.data import BUNDLED_FASHION_MNIST

from .conftest import SMALL_CNN

# Seq-KD (units wrapped in DDP) then a fine-tune (the whole student wrapped): both distributed paths.
ARGS = ["run", str(SMALL_CNN), "-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--kd", "seq", "--kd-steps", "24",
        "--kd-finetune-steps", "8", "--kd-batch-size", "64", "--kd-eval-limit", "200", "--eval-limit", "500",
        "--set", "kd_plan=optimal", "--no-latency", "--deploy-form", "flops", "-q",
        # the data-aware init runs in every process alike; it is kept out so the comparison is the
        # distillation's alone (one process's thread count moves its iterative refit by ~1e-4)
        "--init", "weights", "--no-recalibrate-bn"]


def _env():
    return {**os.environ, "TNNCOMPRESS_DATA": str(BUNDLED_FASHION_MNIST), "OMP_NUM_THREADS": "1",
            "TNNCOMPRESS_PROGRESS": "0"}


@pytest.mark.slow
def test_two_processes_produce_the_single_process_student_and_write_once(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    done = subprocess.run([sys.executable, "-m", "tnncompress.cli.app", *ARGS, "--out", str(single)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "tnncompress.cli.app", *ARGS, "--out", str(multi)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi", "single"]  # no staging directory left
    a, b = load_file(single / "model.safetensors"), load_file(multi / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the same updates, up to the order of floating-point reductions: measured <= 7e-6
        # relative (what changing the thread count of one process gives); a shard seeing other data or
        # other crops gives 1e-3 to 3e-2 (Adam turns any gradient difference into a step of lr)
        diff, size = float((a[k].double() - b[k].double()).norm()), float(a[k].double().norm())
        assert diff <= 1e-4 * size + 1e-7, (k, diff / max(size, 1e-30))
    reports = [json.loads((d / "report.json").read_text()) for d in (single, multi)]
    assert [r["distillation"]["world_size"] for r in reports] == [1, 2]
    assert reports[1]["distillation"]["updates"] == 32
    assert "single" not in done.stdout  # rank 0 alone printed (nothing, under -q)


# the BQN stage with quantised activations: posteriors, temperature and steps learned in two processes
BQN_ARGS = ["run", str(SMALL_CNN), "-f", "tk", "-r", "0.2", "-d", "fashion-mnist", "--bqn-bits", "2", "--bqn-act-bits",
            "2", "--bqn-steps", "8", "--bqn-batch-size", "32", "--bqn-samples", "2", "--eval-limit", "200",
            "--calib-samples", "256", "--no-latency", "--deploy-form", "flops", "--load-form", "factors", "-q",
            "--init", "weights", "--no-recalibrate-bn"]


@pytest.mark.slow
def test_two_processes_learn_the_single_process_bqn(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    for launcher, out in (([], single), (["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
                                         multi)):
        done = subprocess.run([sys.executable, *launcher, "-m", "tnncompress.cli.app", *BQN_ARGS, "--out", str(out)],
                              env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(single / "bqn.safetensors"), load_file(multi / "bqn.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # the same codes; scales to float rounding (measured <= 6e-8)
        if k.endswith(".codes"):
            assert bool((a[k] == b[k]).all()), k
        else:
            assert float((a[k].double() - b[k].double()).abs().max()) <= 1e-6, k
    reports = [json.loads((d / "report.json").read_text())["bqn"] for d in (single, multi)]
    assert reports[0]["training"]["steps"] == reports[1]["training"]["steps"] == 8
    # the recorded loss is the whole batch's in both (averaged over the processes' shares)
    assert abs(reports[0]["training"]["mean_loss"] - reports[1]["training"]["mean_loss"]) < 1e-4
    assert reports[0]["activations"]["nodes"] == reports[1]["activations"]["nodes"]
