"""`tnncompress.compress(model, ...)`: the run's stages in memory. The same student and accuracy as `run` on
the same options, no file written, the caller's model untouched, and the file-only options refused."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

import tnncompress
from tnncompress.compress import plan_layer  # the package is still the stage's
from tnncompress.errors import UsageError
from tnncompress.models import create_model
from tnncompress.pipeline import Recipe, run

OPTIONS = dict(format="cp", rate=0.2, data="fashion-mnist", eval_limit=300, kd_eval_limit=100, calib_samples=256,
               plan_cache=False)


@pytest.fixture
def small_data(monkeypatch):
    from tnncompress.data import BUNDLED_FASHION_MNIST

    monkeypatch.setenv("TNNCOMPRESS_DATA", str(BUNDLED_FASHION_MNIST))


def _model(small_cnn_checkpoint) -> torch.nn.Module:
    model = create_model("small_cnn")
    model.load_state_dict(load_file(small_cnn_checkpoint))
    return model


@pytest.mark.slow
def test_in_memory_gives_runs_student_and_accuracy_and_writes_nothing(tmp_path, monkeypatch, small_cnn_checkpoint,
                                                                       small_data):
    model = _model(small_cnn_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.chdir(tmp_path)
    got = tnncompress.compress(model, **OPTIONS)
    assert os.listdir(tmp_path) == []  # no output directory, no checkpoint, nothing
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    want = run(Recipe.of(checkpoint=str(small_cnn_checkpoint), out=str(tmp_path / "out"), latency=False, onnx=False,
                         **OPTIONS).check())
    mine, theirs = got.model.state_dict(), want.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    a, b = got.report, want.report
    assert a.accuracy.compressed.top1 == b.accuracy.compressed.top1 and a.accuracy.original == b.accuracy.original
    assert [(s.stage, s.top1) for s in a.stages] == [(s.stage, s.top1) for s in b.stages]
    assert a.params == b.params and [r.ranks for r in a.layers] == [r.ranks for r in b.layers]
    assert a.model.checkpoint == "<in-memory model>" and len(a.model.sha256) == 64
    assert a.onnx is None and a.latency is None and a.sizes is None and "export" not in a.seconds


@pytest.mark.slow
def test_in_memory_distillation_keeps_no_checkpoint(tmp_path, monkeypatch, small_cnn_checkpoint, small_data):
    monkeypatch.chdir(tmp_path)
    got = tnncompress.compress(_model(small_cnn_checkpoint), **{**OPTIONS, "kd": "e2e", "kd_steps": 4})
    assert got.report.distillation.updates == 4 and os.listdir(tmp_path) == []


def test_in_memory_refuses_what_only_a_file_run_has_and_needs_an_input_size(small_cnn_checkpoint):
    model = _model(small_cnn_checkpoint)
    for bad in ({"out": "x"}, {"resume": True}, {"checkpoint": "m.pt"}):
        with pytest.raises(UsageError, match="tnncompress run"):
            tnncompress.compress(model, format="cp", rate=0.2, **bad)
    with pytest.raises(UsageError, match="input size"):
        tnncompress.compress(model, format="cp", rate=0.2)
    with pytest.raises(UsageError, match="not both"):
        tnncompress.compress(model, Recipe.of(checkpoint="m.pt", format="cp", rate=0.2), rate=0.1)
    with pytest.raises(UsageError, match="nn.Module"):
        tnncompress.compress("m.pt", format="cp", rate=0.2)
    result = tnncompress.compress(model, Recipe.of(checkpoint="ignored.pt", format="cp", rate=0.2,
                                                   input_size="1,28,28"))
    assert result.report.params.compressible_rate <= 0.2 and result.report.accuracy.original is None
    assert callable(tnncompress.compress) and callable(plan_layer)
