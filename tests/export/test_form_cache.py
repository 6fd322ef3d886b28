"""Deployment-form timings are kept for the next run on this machine: a second decision times only the
whole models, and an entry that does not fit the layer's candidates is timed again."""

from __future__ import annotations

import json

import pytest

from tnncompress.einsum import plan_cache
from tnncompress.export import choose, deployable, form_cache

from .test_deploy import QUICK, _compressed


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(plan_cache.ENV, str(tmp_path / "plans.json"))
    monkeypatch.setattr(plan_cache, "_enabled", True)
    monkeypatch.setattr(form_cache, "_entries", None)
    return tmp_path


def _count_layer_timings(monkeypatch):
    timed = []
    real = choose._time

    def counting(runners, *args, **kwargs):
        timed.append(sorted(runners))
        return real(runners, *args, **kwargs)
    monkeypatch.setattr(choose, "_time", counting)
    return timed


@pytest.mark.parametrize("runtime", ["pytorch", "onnxruntime"])
def test_a_second_decision_reads_the_layer_timings(cache_dir, monkeypatch, runtime):
    model = _compressed("cp")
    timed = _count_layer_timings(monkeypatch)
    _, first = deployable(model, (8, 9, 9), [1, 2], "auto", runtime=runtime, **QUICK)
    layer_timings = [t for t in timed if "measured" not in t]
    assert len(layer_timings) == 3  # one per layer, then the whole models
    stored = json.loads((cache_dir / "plans.forms.json").read_text())["forms"]
    assert len(stored) == 3

    timed.clear()
    monkeypatch.setattr(form_cache, "_entries", None)  # a new process reads the file
    _, second = deployable(model, (8, 9, 9), [1, 2], "auto", runtime=runtime, **QUICK)
    assert not [t for t in timed if "measured" not in t] and timed  # the whole models are still timed
    assert [c.ms for c in second.layers] == [c.ms for c in first.layers]  # what each choice was made from


def test_an_entry_that_does_not_fit_is_timed_again(cache_dir, monkeypatch):
    model = _compressed("cp")
    deployable(model, (8, 9, 9), [1, 2], "auto", runtime="pytorch", **QUICK)
    path = cache_dir / "plans.forms.json"
    doc = json.loads(path.read_text())
    for entry in doc["forms"].values():
        entry.pop("dense")  # a candidate missing
    path.write_text(json.dumps(doc))
    monkeypatch.setattr(form_cache, "_entries", None)
    timed = _count_layer_timings(monkeypatch)
    deployable(model, (8, 9, 9), [1, 2], "auto", runtime="pytorch", **QUICK)
    assert len([t for t in timed if "measured" not in t]) == 3
    assert form_cache.lookup("not a key", {"dense": None}, [1]) is None


def test_off_with_the_plan_cache(monkeypatch):
    monkeypatch.setenv(plan_cache.ENV, "off")
    assert form_cache.location() is None
