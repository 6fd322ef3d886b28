"""The CLI: success paths, --json on stdout, and exit codes with one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress import __version__

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and f"tnncompress {__version__}" in r.stdout and "torch" in r.stdout
    r = run("--help")
    assert r.exit_code == 0 and "inspect" in r.stdout and "eval" in r.stdout
    for cmd in ("inspect", "eval", "spectrum"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.stdout


@pytest.mark.slow
def test_inspect_json(ckpt_dir):
    r = run("inspect", ckpt_dir / "state.pt", "--json")
    assert r.exit_code == 0, r.stderr
    payload = json.loads(r.stdout)  # stdout holds only the JSON document
    layers = {row["name"]: row for row in payload["layers"]}
    assert layers["conv1"]["compressible"] is False and "first" in layers["conv1"]["reason"]
    assert layers["fc2"]["compressible"] is False and "last" in layers["fc2"]["reason"]
    assert layers["conv2"]["compressible"] and layers["conv2"]["flops"] == 2 * 32 * 28 * 28 * 16 * 9
    assert payload["model"]["arch"] == "tnncompress:small_cnn"
    assert payload["totals"]["params_total"] == 89738


def test_inspect_table_and_all_layers(ckpt_dir):
    r = run("inspect", ckpt_dir / "state.safetensors", "--all-layers")
    assert r.exit_code == 0
    assert "first convolution" not in r.stdout and "conv2" in r.stdout


def test_inspect_depthwise_reason(tmp_path):
    import torch
    import torchvision

    torch.save(torchvision.models.mobilenet_v2(num_classes=5).state_dict(), tmp_path / "mb.pt")
    r = run("inspect", tmp_path / "mb.pt", "--json", "--input-size", "3,64,64")
    assert r.exit_code == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["model"]["arch"] == "torchvision:mobilenet_v2"
    reasons = {row["reason"] for row in payload["layers"]}
    assert "depthwise convolution (nothing to factorise)" in reasons


def test_eval_json_on_real_data(ckpt_dir):
    r = run("eval", ckpt_dir / "state.pt", "--data", "fashion-mnist", "--limit", "200", "--json")
    assert r.exit_code == 0, r.stderr
    metrics = json.loads(r.stdout)["metrics"]
    assert metrics["samples"] == 200 and 0 <= metrics["top1"] <= 1 and metrics["synthetic"] is False


def test_eval_under_noise_and_fgsm(ckpt_dir):
    r = run("eval", ckpt_dir / "state.pt", "--data", "fashion-mnist", "--limit", "64", "--noise", "0,0.2",
            "--fgsm", "0.05", "--json")
    assert r.exit_code == 0, r.stderr
    payload = json.loads(r.stdout)
    rows = [(x["attack"], x["strength"], x["units"]) for x in payload["robustness"]]
    assert rows == [("noise", 0.0, "pixel"), ("noise", 0.2, "pixel"), ("fgsm", 0.05, "pixel")]
    assert payload["robustness"][0]["top1"] == payload["metrics"]["top1"]  # no noise: the clean accuracy


def test_eval_synthetic_says_so(ckpt_dir):
    r = run("eval", ckpt_dir / "state.pt", "--data", "synthetic?n=8")
    assert r.exit_code == 0 and "not accuracies" in r.stdout


BAD_INPUTS = [
    # (args, exit code, message fragment)
    (["inspect", "{d}/nope.pt"], 2, "checkpoint not found"),
    (["inspect", "{d}"], 2, "is a directory"),
    (["inspect", "{d}/empty.pt"], 1, "empty file"),
    (["inspect", "{d}/truncated.pt"], 1, "truncated or corrupt"),
    (["inspect", "{d}/truncated.safetensors"], 1, "corrupt safetensors"),
    (["inspect", "{d}/notes.pt"], 1, "found a text file"),
    (["inspect", "{d}/module.pt"], 2, "--trust-checkpoint"),
    (["inspect", "{d}/scripted.pt"], 1, "TorchScript"),
    (["inspect", "{d}/state.pt", "--arch", "resnet18"], 2, "use torchvision:NAME"),
    (["inspect", "{d}/state.pt", "--arch", "torchvision:resnet999"], 2, "no classification model"),
    (["inspect", "{d}/state.pt", "--arch", "torchvision:resnet18"], 1, "does not fit torchvision:resnet18"),
    (["inspect", "{d}/wrong_shape.pt", "--arch", "tnncompress:small_cnn"], 1, "shape mismatches"),
    (["inspect", "{d}/state.pt", "--input-size", "28,28"], 2, "expected C,H,W"),
    (["inspect", "{d}/state.pt", "--input-size", "3,28,28"], 1, "does not accept inputs of size"),
    (["eval", "{d}/state.pt", "--data", "imagenet"], 2, "unknown dataset"),
    (["eval", "{d}/state.pt", "--data", "cifar10:{d}/none"], 2, "dataset directory not found"),
    (["eval", "{d}/state.pt", "--data", "cifar10:{d}"], 1, "missing test_batch"),
    (["eval", "{d}/state.pt", "--device", "tpu"], 2, "--device"),
    (["eval", "{d}/state.pt", "--split", "val"], 2, "--split 'val': use one of train, test"),
    (["eval", "{d}/state.pt", "--noise", "-0.1"], 2, "--noise must be a non-negative number, got '-0.1'"),
    (["eval", "{d}/state.pt", "--fgsm", "0.1,big"], 2, "--fgsm 'big': expected a number"),
]


@pytest.mark.parametrize("args, code, message", BAD_INPUTS, ids=[" ".join(a[0:1] + a[2:]) for a, _, _ in BAD_INPUTS])
def test_bad_input(ckpt_dir, args, code, message):
    r = run(*[a.format(d=ckpt_dir) for a in args])
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1].startswith("error:")  # the error is one line, the last


def test_wrong_class_count_refused(ckpt_dir, cifar10_dir):
    r = run("eval", ckpt_dir / "state.pt", "--data", f"cifar10:{cifar10_dir}")
    assert r.exit_code == 1 and "does not accept inputs of size (3, 32, 32)" in r.stderr


def test_click_usage_errors_exit_2(ckpt_dir):
    assert run("eval", ckpt_dir / "state.pt", "--batch-size", "0").exit_code == 2
    assert run("inspect").exit_code == 2
    assert run("frobnicate").exit_code == 2


def test_debug_shows_traceback(ckpt_dir):
    r = run("inspect", ckpt_dir / "empty.pt", "--debug")
    assert r.exit_code != 0 and r.exception is not None  # the exception propagates under --debug


@pytest.mark.slow
def test_console_script_end_to_end(ckpt_dir):
    exe = [sys.executable, "-m", "tnncompress.cli.app"]
    ok = subprocess.run(exe + ["inspect", str(ckpt_dir / "state.pt"), "--json", "-q"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["totals"]["layers"] == 5
    bad = subprocess.run(exe + ["inspect", str(ckpt_dir / "module.pt")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
