"""The spectral stage of `tnncompress run`: clipping during distillation and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tnncompress.cli.app import app
from torch import nn
from typer.testing import CliRunner

from tnncompress import load
from tnncompress.report import read_report

runner = CliRunner()
FAST = ["--no-latency", "--deploy-form", "flops", "--load-form", "factors", "-q", "--data", "fashion-mnist",
        "--eval-limit", "200", "--kd-eval-limit", "200", "--calib-samples", "256", "--no-recalibrate-bn",
        "--init", "weights"]


@pytest.mark.slow
def test_clip_during_distillation_bounds_every_compressed_layer(tmp_path, small_cnn_checkpoint):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "tk", "--rate", "0.2", "--kd", "e2e",
                            "--kd-steps", "6", "--kd-batch-size", "32", "--spectral", "clip:0.8",
                            "--spectral-every", "3", "--spectral-bn", "2", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    report = read_report(out / "report.json")
    s = report.spectral
    assert s.constraint == "clip:0.8" and s.every == 3 and s.bn == 2.0
    assert s.projections == 3  # after steps 3 and 6, then once more at the end
    compressed = {row.name for row in report.layers if row.status == "compressed"}
    assert {row.name for row in s.layers} == compressed
    for row in s.layers:
        assert row.sigma_before > 0.8  # the teacher's layers are not that small: clipping did something
        assert row.sigma_after <= 0.8 + row.projection_error + 1e-5  # float32 weights, float64 spectrum
        assert row.projection == "core"
    assert s.network_before.upper >= s.network_before.lower
    assert s.network_after.upper < s.network_before.upper
    assert "Spectral" in (out / "report.md").read_text()
    recipe = json.loads(json.dumps(report.recipe))
    assert recipe["spectral"]["constraint"] == "clip:0.8"


@pytest.mark.slow
def test_a_constraint_without_distillation_is_applied_once(tmp_path, small_cnn_checkpoint):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "mcp", "--rate", "0.2",
                            "--spectral", "divide:1", "--spectral-power-iters", "30", "--no-spectral-measure",
                            "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    s = read_report(out / "report.json").spectral
    assert s.projections == 1 and s.network_after is None
    assert all(row.projection == "divide" for row in s.layers) and s.layers


@pytest.mark.slow
def test_orthogonal_convolutions_replace_the_selected_layers_and_export_as_plain_ones(tmp_path,
                                                                                      small_cnn_checkpoint):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--spectral", "orthogonal", "--kd", "e2e",
                            "--kd-steps", "4", "--kd-batch-size", "32", "--out", str(out),
                            *[a for a in FAST if a not in ("--load-form", "factors")]])
    assert r.exit_code == 0, r.output  # no --rate: nothing is factorised
    report = read_report(out / "report.json")
    status = {row.name: row.status for row in report.layers}
    assert status == {"conv1": "excluded", "conv2": "orthogonal", "conv3": "orthogonal", "fc1": "skipped",
                      "fc2": "excluded"}
    s = report.spectral
    assert s.orthogonal_layers == ["conv2", "conv3"]
    for row in s.layers:  # trained for 4 steps, still orthogonal: zero padding makes it <= 1
        assert row.sigma_before > 2 and row.sigma_after <= 1 + 1e-5
    assert report.onnx.check.max_abs_error < 1e-3
    model = load(out)
    assert type(model.conv2) is nn.Conv2d  # deployed as the plain convolution it computes
    x = torch.randn(2, 1, 28, 28)
    assert torch.isfinite(model(x)).all()


def test_a_stride_that_does_not_divide_the_input_is_refused_naming_the_layer(tmp_path):
    teacher = Path(__file__).resolve().parents[2] / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(teacher), "-f", "tk", "-r", "0.2", "--include", "layer3.0.conv1",
                            "--spectral", "clip:1", "--input-size", "1,30,30", "--data", "synthetic?n=8",
                            "--out", str(out), "--no-latency", "--no-onnx", "-q"])
    assert r.exit_code == 2, r.output
    assert "layer3.0.conv1: input height 15 is not divisible by its stride 2" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
