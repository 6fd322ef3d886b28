"""Hostile and careless inputs (issue 10): fixtures shared by the regression tests."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from tnncompress.cli.app import app
from typer.testing import CliRunner

CHECKPOINTS = Path(__file__).resolve().parents[2] / "tnncompress" / "models" / "checkpoints"
SMALL_CNN = CHECKPOINTS / "small_cnn_fashion_mnist.safetensors"
FAST = ["--no-latency", "--deploy-form", "flops", "-q"]
runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, list(map(str, args)), **kwargs)


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """An importable module `tnn_marker` whose functions, if ever called, create a marker file: code
    that must not run leaves evidence when it does."""
    marker = tmp_path / "PWNED"
    (tmp_path / "tnn_marker.py").write_text(
        "from pathlib import Path\n"
        f"MARKER = Path({str(marker)!r})\n"
        "def make(**kwargs):\n"
        "    MARKER.write_text('ran')\n"
        "    from tnncompress.models import create_model\n"
        "    return create_model('small_cnn')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("tnn_marker", None)


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    """A small run's output directory (cp at 0.2, no data), to tamper with in copies."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = invoke("run", SMALL_CNN, "--format", "cp", "--rate", "0.2", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return out


def tampered(output_dir, tmp_path, **changes):
    """A copy of `output_dir` whose structure.json has these top-level fields changed."""
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    structure = json.loads((copy / "structure.json").read_text())
    structure.update(changes)
    (copy / "structure.json").write_text(json.dumps(structure))
    return copy
