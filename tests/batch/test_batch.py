"""`tnncompress batch`: gates, JUnit and summaries, reuse of completed runs, resumption, and bad input."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.batch import collect
from tnncompress.pipeline import flow, run
from tnncompress.report import read_report
from tnncompress.train.hooks import observe_checkpoints

runner = CliRunner()
SMALL_CNN = Path(__file__).resolve().parents[2] / "tnncompress/models/checkpoints/small_cnn_fashion_mnist.safetensors"
BASE = {"version": 2, "model": {"checkpoint": str(SMALL_CNN)}, "data": {"spec": "fashion-mnist"},
        "evaluate": {"limit": 200}, "compress": {"format": "tk", "rate": 0.3, "init": "weights"},
        "calibrate": {"samples": 256, "recalibrate_bn": False}, "report": {"latency": False},
        "export": {"deploy_form": "flops", "load_form": "factors"}}


def write(folder: Path, name: str, **sections) -> Path:
    doc = json.loads(json.dumps(BASE))
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def batch(*args):
    return runner.invoke(app, ["batch", *map(str, args)])


@pytest.fixture
def three(tmp_path):
    """A passing recipe, one that misses a gate, one whose checkpoint is not a checkpoint."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "good", gates={"max_rate": 0.5, "max_onnx_error": 1e-3})
    write(recipes, "gated", gates={"max_accuracy_drop": 0.01})
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not weights at all")
    write(recipes, "broken", model={"checkpoint": str(broken)})
    return recipes


def wrap_stage(monkeypatch, name: str, wrapper) -> None:
    """Run `wrapper(run, state)` in place of the stage `name` of every run (the pipeline's stage seam)."""
    def wrapped(stage):
        return dataclasses.replace(stage, run=lambda state: wrapper(stage.run, state))
    monkeypatch.setattr(flow, "SHARED", [wrapped(s) if s.name == name else s for s in flow.SHARED])


def counting_decompositions(monkeypatch) -> list[str]:
    calls = []

    def counted(run, state):
        calls.append(Path(state.recipe.out).name)
        return run(state)

    wrap_stage(monkeypatch, "layer_decomp", counted)
    return calls


@pytest.mark.slow
def test_a_batch_reports_passes_gate_failures_and_errors_and_reruns_only_what_changed(three, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = counting_decompositions(monkeypatch)
    r = batch(three, "-o", out)
    assert r.exit_code == 1, r.output  # a run errored (that outranks the missed gate)
    assert sorted(calls) == ["gated", "good"]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("errors") == "1"
    assert set(cases) == {"good", "gated", "broken"}
    assert cases["good"].find("failure") is None and cases["good"].find("error") is None
    assert "max_accuracy_drop" in cases["gated"].find("failure").get("message")
    assert "broken.safetensors" in cases["broken"].find("error").get("message")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["total"], summary["passed"], summary["failed"], summary["errors"]) == (3, 1, 1, 1)
    md = (out / "summary.md").read_text()
    assert "| `good` | ✅ passed" in md and "| `gated` | `max_accuracy_drop` |" in md and "**missed**" in md
    html = (out / "summary.html").read_text()
    assert 'href="good/report.html"' in html and "missed" in html
    # the passing run's outputs, with its gates judged in its report
    good = read_report(out / "good" / "report.json")
    assert [(g.name, g.passed) for g in good.gates] == [("max_rate", True), ("max_onnx_error", True)]
    assert good.gates[0].measured == pytest.approx(good.params.rate)
    for name in ("model.safetensors", "model.onnx", "report.html", "recipe.yaml"):
        assert (out / "good" / name).is_file()
    assert not (out / "broken").exists()

    # a rerun repeats no Layer-Decomp of the completed runs (the broken one is tried again)
    calls.clear()
    r = batch(three, "-o", out)
    assert r.exit_code == 1 and calls == []
    runs = {o["name"]: o for o in json.loads((out / "summary.json").read_text())["runs"]}
    assert runs["good"]["reused"] and runs["gated"]["reused"] and runs["gated"]["status"] == "failed"

    # a gate given on the command line re-judges the completed runs without rerunning them
    (three / "broken.yaml").unlink()
    r = batch(three, "-o", out, "--gate", "max_rate=0.01")
    assert r.exit_code == 4 and calls == [], r.output

    # a changed recipe reruns that run alone
    write(three, "gated", compress={"rate": 0.25})
    r = batch(three, "-o", out)
    assert r.exit_code == 0, r.output
    assert calls == ["gated"]
    assert read_report(out / "gated" / "report.json").target_rate == 0.25


class _Stop(Exception):
    pass


def _stop_after_first_phase(payload):
    if payload["phase"] == 1:
        raise _Stop


@pytest.mark.slow
def test_an_interrupted_batch_resumes_its_distillation(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "kd", compress={"format": "cp", "rate": 0.2},
          distill={"algorithm": "seq", "steps": 30, "plan": "optimal", "eval_limit": 300, "seq_cache": False})
    out = tmp_path / "out"
    [job] = collect([recipes], out)
    with pytest.raises(_Stop), observe_checkpoints(_stop_after_first_phase):  # what a batch killed during this
        run(job.recipe)  # run's distillation leaves
    assert (out / ".kd.partial" / "checkpoints" / "distill.pt").is_file()
    calls = counting_decompositions(monkeypatch)
    r = batch(recipes, "-o", out, "-v")
    assert r.exit_code == 0, r.output
    assert "resuming seq distillation at phase 2/3" in r.output
    [outcome] = json.loads((out / "summary.json").read_text())["runs"]
    assert outcome["resumed"] and outcome["status"] == "passed"
    assert calls == ["kd"]  # Layer-Decomp is redone (cheap, seeded); the distillation continues
    curve = [(p.after, p.updates) for p in read_report(out / "kd" / "report.json").distillation.curve]
    assert curve[-1] == ("Seq-KD 3/3 fc1", 30)


def test_a_sweep_names_each_run_after_its_values(tmp_path):
    base = write(tmp_path, "base")
    jobs = collect([base], tmp_path / "o", ["format=cp,tk", "compress.rate=0.1,0.05"])
    assert [j.name for j in jobs] == ["base_format-cp_rate-0.1", "base_format-cp_rate-0.05",
                                      "base_format-tk_rate-0.1", "base_format-tk_rate-0.05"]
    assert [(j.recipe.compress.format, j.recipe.compress.rate) for j in jobs] == [
        ("cp", 0.1), ("cp", 0.05), ("tk", 0.1), ("tk", 0.05)]
    assert all(Path(j.recipe.out).parent == tmp_path / "o" for j in jobs)


@pytest.mark.parametrize(("setup", "args", "words"), [
    ("empty", [], "no recipe files"),
    ("malformed", [], "bad.yaml"),
    ("good", ["--sweep", "colour=red,blue"], "--sweep 'colour': not a recipe key"),
    ("good", ["--gate", "max_loss=1"], "--gate 'max_loss=1': expected NAME=VALUE with NAME one of"),
    ("good", ["--gate", "min_speedup=2"], "expected SPEEDUP@RUNTIME:BATCH"),
    ("good", ["--gate", "min_speedup=2@pytorch_cpu:1"], "needs the latency measurement"),
])
def test_bad_batch_input_is_refused_in_one_line_before_any_run(tmp_path, monkeypatch, setup, args, words):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    if setup != "empty":
        write(recipes, "a")
    if setup == "malformed":
        (recipes / "bad.yaml").write_text("compress: {format: cp, rate: [0.1\n")
    calls = counting_decompositions(monkeypatch)
    r = batch(recipes, "-o", tmp_path / "out", *args)
    assert r.exit_code == 2, r.output
    assert words in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert calls == [] and not (tmp_path / "out").exists()


def test_a_recipe_key_error_names_the_file(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "a")
    write(recipes, "typo", compress={"fromat": "cp"})
    r = batch(recipes, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "typo.yaml" in r.output and "fromat" in r.output, r.output


def test_fail_fast_stops_at_the_first_failure(three, tmp_path):
    out = tmp_path / "out"
    r = batch(three, "-o", out, "--fail-fast")  # broken.yaml sorts first
    assert r.exit_code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 1 and summary["not_run"] == ["gated", "good"]
    assert "not run: --fail-fast stopped the batch" in (out / "summary.md").read_text()
