"""The BQN stage of `tnncompress run`: the posterior learned, evaluated three ways, and its MAP QNN
exported (integer codes, safetensors, ONNX) and reloaded."""

from __future__ import annotations

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


def test_bqn_learns_evaluates_and_exports_the_map_qnn(tmp_path, small_cnn_checkpoint):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(small_cnn_checkpoint), "--format", "tk", "--rate", "0.2", "--bqn-bits", "2",
                            "--bqn-steps", "6", "--bqn-batch-size", "32", "--bqn-samples", "2", "--bqn-sharpen", "50",
                            "--bqn-recalibrate", "64", "--out", str(out),
                            *FAST])
    assert r.exit_code == 0, r.output
    report = read_report(out / "report.json")
    b = report.bqn
    assert b.bits == 2 and b.training["steps"] == 6 and b.tensors
    assert b.sharpen == 50 and b.recalibrated == 64
    assert all(name.split(".factors.")[0] in {row.name for row in report.layers if row.status == "compressed"}
               for name in b.tensors)
    for m in (b.float_student, b.ptq, b.analytic, b.mc, b.map):
        assert m.samples == 200 and 0 <= m.top1 <= 1 and m.nll > 0
    # the exported model is the MAP QNN (its norms re-estimated as evaluated): its accuracy is the compressed model's
    assert b.map.top1 == report.accuracy.compressed.top1
    # ... and its logits are the evaluated ones: the temperature is folded into the classifier
    assert b.temperature_folded_into and abs(b.map.nll - report.accuracy.compressed.nll) < 1e-4
    assert b.size["bytes"] < b.size["float32_bytes"]
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
