"""`tnncompress run --kd ...`: options, refusals before any work, and --resume through the pipeline."""


import pytest
import torch
from safetensors.torch import load_file
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.pipeline import Recipe, run
from tnncompress.report import read_report
from tnncompress.train.hooks import observe_checkpoints

from .conftest import SMALL_CNN

runner = CliRunner()
FAST = ["--no-latency", "--deploy-form", "flops", "--eval-limit", "500", "--kd-eval-limit", "300"]
KD = ["-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--kd", "seq", "--kd-steps", "30", "--set", "kd_plan=optimal",
      "--no-seq-cache", "--init", "weights", "--no-recalibrate-bn"]


def invoke(*args):
    return runner.invoke(app, ["run", *map(str, args)])


@pytest.mark.parametrize(("args", "message"), [
    (["--kd", "seq"], "needs --data"),
    (["--kd", "fast", "-d", "fashion-mnist"], "--kd 'fast': use one of none, seq, e2e"),
    (["--kd", "e2e", "-d", "fashion-mnist", "--kd-loss", "l1"], "--kd-loss 'l1': use one of auto, mse, kl"),
    (["--kd", "seq", "-d", "fashion-mnist", "--seq-unit", "stage"], "--seq-unit 'stage'"),
    (["--kd", "e2e", "-d", "fashion-mnist", "--kd-ce-weight", "1.5"], "--kd-ce-weight must be at most 1"),
    (["--kd", "e2e", "-d", "fashion-mnist", "--kd-decay-at", "2"], "--kd-decay-at must be less than 1"),
    (["--kd", "e2e", "-d", "fashion-mnist", "--kd-steps", "0"], "--kd-steps must be at least 1"),
])
def test_bad_distillation_options_are_refused_in_one_line(tmp_path, args, message):
    result = invoke(SMALL_CNN, "-f", "cp", "-r", "0.2", *args, "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_data_that_does_not_fit_the_model_is_refused_before_any_work(tmp_path, cifar10_dir):
    result = invoke(SMALL_CNN, *KD[:4], "-d", f"cifar10:{cifar10_dir}", "--kd", "seq", "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "does not accept inputs" in result.output and "Layer-Decomp" not in result.output
    assert not list(tmp_path.iterdir())


class _Stop(Exception):
    pass


def _interrupt_after_first_unit(payload):
    if payload["phase"] == 1:
        raise _Stop


@pytest.mark.slow
def test_an_interrupted_run_is_kept_and_resumed_to_the_uninterrupted_result(tmp_path, bundled_data):
    whole = tmp_path / "whole"
    result = invoke(SMALL_CNN, *KD, *FAST, "--out", whole, "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "resumed"
    args = dict(checkpoint=str(SMALL_CNN), format="cp", rate=0.2, data="fashion-mnist", kd="seq", kd_steps=30,
                kd_plan="optimal", latency=False, deploy_form="flops", eval_limit=500, kd_eval_limit=300, out=str(out),
                seq_cache=False, init="weights", recalibrate_bn=False)
    with pytest.raises(_Stop), observe_checkpoints(_interrupt_after_first_unit):
        run(Recipe.of(**args).check())
    partial = tmp_path / ".resumed.partial"
    assert not out.exists() and (partial / "checkpoints" / "distill.pt").is_file()
    # without --resume the kept run is not silently discarded
    result = invoke(SMALL_CNN, *KD, *FAST, "--out", out)
    assert result.exit_code == 2 and "--resume" in result.output
    # a resumed run must compute the same thing
    result = invoke(SMALL_CNN, *KD, *FAST, "--kd-lr", "0.01", "--out", out, "--resume")
    assert result.exit_code == 2 and "distill.lr" in result.output
    # execution keys may change; -v shows the resumption
    result = invoke(SMALL_CNN, *KD, *FAST, "--out", out, "--resume", "--workers", "0", "-v")
    assert result.exit_code == 0, result.output
    assert "resuming seq distillation at phase 2/3" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumed", "whole"]  # the partial became the output
    assert not (out / "checkpoints").exists()
    a, b = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    reports = [read_report(d / "report.json") for d in (whole, out)]
    curves = [[(p.after, p.updates) for p in r.distillation.curve] for r in reports]
    assert curves[0] == curves[1] == [("start", 0), ("Seq-KD 1/3 conv2", 10), ("Seq-KD 2/3 conv3", 20),
                                      ("Seq-KD 3/3 fc1", 30)]
    assert reports[1].accuracy.compressed.top1 == pytest.approx(reports[0].accuracy.compressed.top1, abs=0.004)
    assert reports[1].accuracy.layer_decomp_top1 == reports[1].stages[0].top1
    assert "## Distillation (Seq-KD)" in (out / "report.md").read_text()


def test_help_lists_the_distillation_options_with_their_defaults():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for text in ("--kd-steps", "--kd-epochs", "--seq-unit", "--resume", "[default: mcp]", "[default: 0.001]",
                 "(default 2)"):
        assert text in result.output, text
