"""INT8 on top of low rank (issue 26): model.int8.onnx by onnxruntime's static quantization, its check,
its evaluation in onnxruntime, and the run that writes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.data import load_data
from tnncompress.errors import ExportError
from tnncompress.export import to_onnx
from tnncompress.export.quantize import AGREEMENT, OnnxModule, check_int8, quantize_int8
from tnncompress.io import load_model

SMALL_CNN = Path(__file__).resolve().parents[2] / "tnncompress/models/checkpoints/small_cnn_fashion_mnist.safetensors"


@pytest.fixture(scope="module")
def teacher():
    loaded = load_model(SMALL_CNN)
    train = load_data("fashion-mnist", "train", input_size=loaded.input_size)
    test = load_data("fashion-mnist", "test", input_size=loaded.input_size)
    calibration = torch.stack([train.dataset[i][0] for i in range(128)]).numpy()
    check = torch.stack([test.dataset[i][0] for i in range(256)]).numpy()
    return to_onnx(loaded.model, loaded.input_size), calibration, check, test


def test_the_int8_graph_agrees_with_the_float_one_and_is_quantized(teacher):
    graph, calibration, check, test = teacher
    int8 = quantize_int8(graph, np.split(calibration, 4))
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    weights = [t for t in onnx.load_from_string(int8).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and len(int8) < 0.4 * len(graph)  # INT8 weights: about a quarter of the float bytes
    result = check_int8(int8, graph, check)
    assert result.passed and result.clear_agreement >= AGREEMENT and result.logit_error < 0.1
    assert result.clear > 0.8 * result.samples and result.agreement >= 0.98  # most labels are clear, and agree
    # evaluated through onnxruntime as any model is: within a point of the float graph
    from tnncompress.evaluate import evaluate

    float_top1 = evaluate(OnnxModule(graph), test, limit=500).top1
    assert abs(evaluate(OnnxModule(int8), test, limit=500).top1 - float_top1) <= 0.01


def test_a_mis_scaled_calibration_fails_the_check(teacher):
    """Ranges calibrated on inputs 50x too small saturate every activation of real inputs."""
    graph, calibration, check, _ = teacher
    int8 = quantize_int8(graph, np.split(calibration * 0.02, 4))
    with pytest.raises(ExportError, match="does not reproduce the float model"):
        check_int8(int8, graph, check)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_every_calibration_method_passes_on_a_trained_model(teacher, method):
    graph, calibration, check, _ = teacher
    assert check_int8(quantize_int8(graph, np.split(calibration, 4), method), graph, check).passed


@pytest.mark.slow
def test_a_run_writes_checks_evaluates_and_times_model_int8(tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["run", str(SMALL_CNN), "-f", "cp", "-r", "0.3", "-d", "fashion-mnist",
                                 "--quantize", "int8", "--int8-samples", "128", "--calib-samples", "128",
                                 "--eval-limit", "300", "--latency-batches", "1", "--deploy-form", "flops",
                                 "--gate-max-int8-size-ratio", "0.5", "--gate-max-int8-accuracy-drop", "10",
                                 "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    q = report["int8"]
    assert (out / "model.int8.onnx").stat().st_size == q["bytes"] == report["sizes"]["artifacts"]["model.int8.onnx"]
    assert q["check"]["clear_agreement"] >= AGREEMENT and q["accuracy"]["samples"] == 300
    assert "1" in report["latency"]["runtimes"]["onnxruntime_int8"]
    assert [g["name"] for g in report["gates"] if g["passed"]] == ["max_int8_accuracy_drop", "max_int8_size_ratio"]
    assert "## INT8 (model.int8.onnx)" in (out / "report.md").read_text()


@pytest.mark.parametrize("args", [["--quantize", "int8"], ["--quantize", "int8", "-d", "fashion-mnist", "--no-onnx"],
                                  ["--gate-max-int8-size-ratio", "0.5", "-d", "fashion-mnist"]])
def test_int8_without_what_it_needs_is_refused_before_any_work(tmp_path, args):
    r = CliRunner().invoke(app, ["run", str(SMALL_CNN), "-f", "cp", "-r", "0.3", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "--quantize" in r.output and not (tmp_path / "o").exists()
