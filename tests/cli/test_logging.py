"""-v shows what each stage did; without it, a run prints its summary (and progress on a terminal) only;
-q prints nothing but errors. Library modules log through logging, the CLI decides what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from tnncompress.cli.app import app
from typer.testing import CliRunner

SMALL_CNN = Path(__file__).resolve().parents[2] / "tnncompress" / "models" / "checkpoints" / \
    "small_cnn_fashion_mnist.safetensors"
STAGE_LINES = ("architecture tnncompress:small_cnn", "data: fashion-mnist", "plan: 3 layers to compress",
               "Layer-Decomp: 3 layers in", "top-1 on 200 test samples", "ONNX: ")


def _run(tmp_path, *flags):
    args = ["run", str(SMALL_CNN), "-f", "cp", "-r", "0.2", "-d", "fashion-mnist", "--eval-limit", "200",
            "--no-latency", "--deploy-form", "flops", "--calib-samples", "256",
            "--out", str(tmp_path / f"o{len(flags)}{''.join(flags)}"),
            *flags]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_verbose_shows_the_stages_and_default_shows_the_summary(tmp_path):
    verbose = _run(tmp_path, "-v")
    for line in STAGE_LINES:
        assert line in verbose.stderr, line
    assert "written to" in verbose.stdout
    default = _run(tmp_path)
    assert not any(line in default.stderr for line in STAGE_LINES), default.stderr
    assert "written to" in default.stdout and "top-1 (200 samples)" in default.stdout
    quiet = _run(tmp_path, "-q")
    assert quiet.stdout == "" and quiet.stderr == ""
