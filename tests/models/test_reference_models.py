"""The committed teacher checkpoints: they load by their metadata alone and score what MODELS.md says
(what their training run recorded next to them), on the official Fashion-MNIST test set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tnncompress.data import load_data
from tnncompress.evaluate import evaluate
from tnncompress.io import load_model

CHECKPOINTS = Path(__file__).resolve().parents[2] / "tnncompress" / "models" / "checkpoints"
MODELS_MD = Path(__file__).resolve().parents[2] / "MODELS.md"


@pytest.mark.slow
@pytest.mark.parametrize("name, arch, min_top1", [
    ("resnet32_fashion_mnist", "tnncompress:resnet32", 0.93),
    ("small_cnn_fashion_mnist", "tnncompress:small_cnn", 0.90),
])
def test_teacher_scores_what_was_recorded(name, arch, min_top1):
    path = CHECKPOINTS / f"{name}.safetensors"
    record = json.loads(path.with_suffix(".json").read_text())
    loaded = load_model(path)
    assert loaded.arch == arch and loaded.arch_how == "read from the checkpoint's metadata"
    assert loaded.input_size == (1, 28, 28)
    metrics = evaluate(loaded.model, load_data("fashion-mnist", "test"))
    assert metrics.samples == 10_000
    # the same weights on another CPU may flip a handful of near-tied predictions, no more
    assert abs(metrics.top1 - record["test"]["top1"]) <= 0.001
    assert metrics.nll == pytest.approx(record["test"]["nll"], abs=2e-3)
    assert metrics.top1 >= min_top1
    assert f"{100 * record['test']['top1']:.2f}%" in MODELS_MD.read_text()
