"""Hostile and careless inputs (issue 10): fixtures shared by the regression tests."""

from __future__ import annotations

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
