"""The BQN stage of `tnncompress run`: the posterior learned, evaluated three ways, and its MAP QNN
exported (integer codes, safetensors, ONNX) and reloaded."""

from __future__ import annotations

import pytest
import torch
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress import load
from tnncompress.bayes.export import read_codes
from tnncompress.bayes.posterior import levels
from tnncompress.report import read_report

runner = CliRunner()
FAST = ["--no-latency", "--deploy-form", "flops", "--load-form", "factors", "-q", "--data", "fashion-mnist",
        "--eval-limit", "200", "--calib-samples", "256", "--no-recalibrate-bn", "--init", "weights"]


@pytest.mark.slow
def test_bqn_learns_evaluates_and_exports_the_map_qnn(tmp_path, small_cnn_checkpoint):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "tk", "--rate", "0.2", "--bqn-bits", "2",
                            "--bqn-steps", "6", "--bqn-batch-size", "32", "--bqn-samples", "2", "--bqn-sharpen", "50",
                            "--bqn-recalibrate", "64", "--out", str(out),
                            *FAST])
    assert r.exit_code == 0, r.output
    report = read_report(out / "report.json")
    b = report.bqn
    assert b.bits == 2 and b.training.steps == 6 and b.tensors
    assert b.sharpen == 50 and b.recalibrated == 64
    assert all(name.split(".factors.")[0] in {row.name for row in report.layers if row.status == "compressed"}
               for name in b.tensors)
    for m in (b.float_student, b.ptq, b.analytic, b.mc, b.map):
        assert m.samples == 200 and 0 <= m.top1 <= 1 and m.nll > 0
    # the exported model is the MAP QNN (its norms re-estimated as evaluated): its accuracy is the compressed model's
    assert b.map.top1 == report.accuracy.compressed.top1
    # ... and its logits are the evaluated ones: the temperature is folded into the classifier
    assert b.temperature_folded_into and abs(b.map.nll - report.accuracy.compressed.nll) < 1e-4
    assert b.size.bytes < b.size.float32_bytes
    md = (out / "report.md").read_text()
    assert "Bayesian quantized network" in md and "re-estimated on 64 pool images" in md
    # the codes reload bit for bit into what model.safetensors holds, every value a level x the scale
    model = load(out, form="factors")
    params = dict(model.named_parameters())
    codes = read_codes(out)
    assert set(codes) == set(b.tensors)
    for name, w in codes.items():
        assert torch.equal(params[name].detach(), w)
        # per-channel scales (the default): each output channel's slice holds at most 2^2 values
        assert all(len(torch.unique(row)) <= len(levels(2)) for row in w.reshape(w.shape[0], -1))
    # codes are packed at 2 bits each
    from safetensors.torch import load_file
    stored = load_file(str(out / "bqn.safetensors"))
    for name, w in codes.items():
        assert stored[f"{name}.codes"].numel() == -(-w.numel() * 2 // 8)
    assert report.onnx.check.max_abs_error < 1e-3


def test_bqn_without_data_or_with_bad_bits_is_refused_before_any_work(tmp_path, small_cnn_checkpoint):
    for args, words in ((["--bqn-bits", "9", "-d", "fashion-mnist"], "at most 8"),
                        (["--bqn-bits", "0", "-d", "fashion-mnist"], "at least 1"),
                        (["--bqn-bits", "2"], "needs --data")):
        out = tmp_path / "out"
        r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "tk", "--rate", "0.2", *args,
                                "--out", str(out), "-q"])
        assert r.exit_code == 2 and words in r.output and "Traceback" not in r.output, r.output
        assert not out.exists()


@pytest.mark.slow
def test_quantised_activations_are_learned_exported_and_reloaded(tmp_path, small_cnn_checkpoint):
    import json

    import numpy as np

    from tnncompress.bayes.activations import quantizers
    from tnncompress.data import iterate_batches, load_data
    from tnncompress.evaluate import evaluate
    from tnncompress.export.onnx_graph import session

    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "tk", "--rate", "0.2", "--bqn-bits", "4",
                            "--bqn-act-bits", "2", "--bqn-dense", "--bqn-exclude", "fc2", "--bqn-train-float",
                            "--bqn-steps", "4", "--bqn-batch-size", "32", "--bqn-samples", "2", "--out", str(out),
                            *FAST])
    assert r.exit_code == 0, r.output
    b = read_report(out / "report.json").bqn
    assert b.activations.bits == 2 and b.activations.nodes == ["relu", "relu_1", "relu_2", "relu_3"]
    assert set(b.activations.steps) == set(b.activations.learned_steps) == set(b.activations.nodes)
    assert b.train_float and "conv1.weight" in b.tensors and not any(t.startswith("fc2.") for t in b.tensors)
    assert json.loads((out / "structure.json").read_text())["activations"] == {
        "bits": 2, "nodes": ["relu", "relu_1", "relu_2", "relu_3"]}
    assert "4 ReLUs became 2-bit quantised ReLUs" in (out / "report.md").read_text()
    # load(DIR) is the evaluated MAP QNN: its accuracy is the report's, its quantisers emit at most 4 values each
    model = load(out)
    test = load_data("fashion-mnist", "test", input_size=(1, 28, 28))
    assert evaluate(model, test, limit=200).top1 == read_report(out / "report.json").accuracy.compressed.top1
    seen = {}
    def keep(name):
        def hook(_module, _inputs, output) -> None:  # a hook that returns a value replaces the output
            seen.setdefault(name, torch.unique(output))
        return hook

    for n, m in quantizers(model).items():
        m.register_forward_hook(keep(n))
    x, _ = next(iterate_batches(test, 200))
    with torch.no_grad():
        logits = model(x)
    assert len(seen) == 4 and all(len(v) <= 4 for v in seen.values())
    got = session((out / "model.onnx").read_bytes()).run(["logits"], {"input": x.numpy()})[0]
    # a rounding threshold can fall between PyTorch's and onnxruntime's float32 results: count the rows
    close = np.isclose(got, logits.numpy(), rtol=1e-3, atol=1e-4).all(1)
    assert close.mean() >= 0.98, close.mean()


@pytest.mark.slow
def test_bqn_bad_inputs_are_one_line_errors_before_any_work(tmp_path, small_cnn_checkpoint):
    from safetensors.torch import save_file

    from tests import user_models

    def checkpoint(factory: str):
        torch.manual_seed(0)
        path = tmp_path / f"{factory}.safetensors"
        save_file({k: v.contiguous() for k, v in getattr(user_models, factory)().state_dict().items()}, str(path))
        return [str(path), "--arch", f"tests.user_models:{factory}"]

    base = ["--format", "tk", "--rate", "0.3", "-d", "fashion-mnist", "-q"]
    for args, code, words in (
            ([str(small_cnn_checkpoint), "--bqn-bits", "2", "--bqn-act-bits", "5"], 2, "at most 4"),
            ([str(small_cnn_checkpoint), "--bqn-act-bits", "2"], 2, "need --bqn-bits"),
            ([str(small_cnn_checkpoint), "--bqn-bits", "2", "--bqn-exclude", "nope*"], 2,
             "matches no layer the BQN stage quantises"),
            ([*checkpoint("silu_net"), "--bqn-bits", "2", "--bqn-act-bits", "1"], 2, "no ReLU to quantise"),
            ([*checkpoint("group_norm_net"), "--bqn-bits", "2"], 2,
             "layer 'norm' (GroupNorm): it handles"),
            ([*checkpoint("dense_head_net"), "--bqn-bits", "2"], 1, "not [batch, classes] logits")):
        out = tmp_path / "out"
        r = runner.invoke(app, ["run", *args, *base, "--out", str(out)])
        assert r.exit_code == code and words in r.output and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()
    # the group norm's error names the quantised layer that feeds it and the way out, which works
    r = runner.invoke(app, ["run", *checkpoint("group_norm_net"), "--bqn-bits", "2", *base, "--out", str(out)])
    assert "quantised layer 'conv2'" in r.output and "--bqn-exclude" in r.output
    r = runner.invoke(app, ["run", *checkpoint("group_norm_net"), "--bqn-bits", "2", "--bqn-exclude", "conv2",
                            "--bqn-steps", "2", *base, *FAST[:-2], "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert all(t.startswith("fc1.") for t in read_report(out / "report.json").bqn.tensors)


@pytest.mark.slow
def test_the_onnx_graph_stores_the_map_qnn_as_integer_levels(tmp_path, small_cnn_checkpoint):
    """Issue 26: model.onnx of a 4-bit BQN holds INT4 levels and scales (no float copy of a quantized weight),
    computes the exported MAP QNN, and onnxruntime folds the levels into float weights at session start;
    at 8 bits the levels are INT8. Against --onnx-weights dense, which stores the float weights."""
    import numpy as np
    import onnx

    from tnncompress.export import INPUT, OUTPUT, session
    from tnncompress.export.onnx_graph import folds

    sizes = {}
    for bits, weights in ((4, "factors"), (8, "factors"), (4, "dense")):
        out = tmp_path / f"{bits}-{weights}"
        r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "tk", "--rate", "0.2", "--bqn-bits",
                                str(bits), "--bqn-dense", "--bqn-steps", "4", "--bqn-batch-size", "32",
                                "--bqn-samples", "2", "--onnx-weights", weights, "--out", str(out), *FAST])
        assert r.exit_code == 0, r.output
        graph = (out / "model.onnx").read_bytes()
        sizes[bits, weights] = len(graph)
        model = onnx.load_from_string(graph)
        report = read_report(out / "report.json")
        x = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = load(out, form="factors")(x).numpy()
        np.testing.assert_allclose(session(graph).run([OUTPUT], {INPUT: x.numpy()})[0], want, rtol=1e-4, atol=1e-5)
        if weights == "dense":
            continue
        integer = {t.name for t in model.graph.initializer
                   if t.data_type == (onnx.TensorProto.INT4 if bits == 4 else onnx.TensorProto.INT8)}
        levels = {n for n in integer if n.endswith(".levels")}
        assert len(levels) == len(report.bqn.tensors)  # one per quantized tensor (factors and dense weights)
        floats = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
        quantised = report.bqn.size.quantised_weights
        assert floats < report.bqn.size.float_weights + quantised / 4  # scales, biases, norms: no float weights
        assert report.onnx.folded and folds(graph, integer)
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {21 if bits == 4 else 17}
    assert sizes[4, "factors"] < sizes[8, "factors"] < sizes[4, "dense"] / 2
