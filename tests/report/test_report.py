"""The report stage: rows per layer from the plan, the typed report written as JSON and read back
unchanged, and report.md rendering what the records hold."""

from __future__ import annotations

import json

import pytest

from tnncompress.compress import CompressConfig, LayerResult, plan_model, select_layers
from tnncompress.errors import UsageError
from tnncompress.evaluate import Metrics
from tnncompress.export import DeployChoice, FormDecision, OnnxCheck
from tnncompress.report import (
    Accuracy,
    Latency,
    LatencyEntry,
    OnnxReport,
    build_report,
    layer_rows,
    read_report,
    render_markdown,
    write_report,
)
from tnncompress.report.model import LayerRow, LayerStatus
from tnncompress.schema import from_data


@pytest.fixture
def report(small_model):
    from tnncompress.io import LoadedModel
    from tnncompress.io.checkpoint import Checkpoint
    from tnncompress.pipeline import Recipe

    choices = select_layers(small_model, (1, 28, 28), exclude=["fc1"])
    plans = plan_model(small_model, choices, CompressConfig(format="cp", rate=0.02))
    results = [LayerResult(p.name, 0.25, 0.5) for p in plans if p.ranks]
    forms = FormDecision("onnxruntime", [1, 32], "measured",
                         [DeployChoice(r.name, "factors", "greedy", 10, 5, [[0, 1], [2, 5], [3, 6], [4, 7]],
                                       {"dense": {"1": 0.5, "32": 4.0}, "greedy": {"1": 0.25, "32": 2.0}})
                          for r in results],
                         {"measured": {"1": 1.0, "32": 8.0}, "dense": {"1": 2.0, "32": 16.0},
                          "factors": {"1": 1.5, "32": 9.0}})
    onnx = OnnxReport("model.onnx", 17, {"Conv": 9}, OnnxCheck("passed", [1, 3], 1e-6, 1e-3, 1e-4, True), forms)
    load_forms = FormDecision("pytorch", [1, 32], "dense",
                              [DeployChoice(r.name, "dense", None, 10, 5) for r in results])
    latency = Latency(threads=2, runtimes={"pytorch_cpu": {"1": LatencyEntry(2.0, 4.0, 0.5)},
                                           "onnxruntime_cpu": {"1": LatencyEntry(2.0, 1.0, 2.0)}})
    loaded = LoadedModel(small_model, "tnncompress:small_cnn", "given", Checkpoint("ckpt.pt", "state_dict"),
                         (1, 28, 28))
    accuracy = Accuracy("fashion-mnist", 100, Metrics(100, 0.9, 0.99, 0.3, 0.02), Metrics(100, 0.8, 0.97, 0.5, 0.04),
                        0.8)
    recipe = Recipe.of(checkpoint="ckpt.pt", format="cp", rate=0.02, exclude=["fc1"]).check()
    report = build_report(recipe=recipe, loaded=loaded, original=small_model, compressed=small_model,
                        rows=layer_rows(choices, plans, results, onnx, load_forms=load_forms), accuracy=accuracy,
                        seconds={"total": 1.5}, warnings=latency.slower_than_original(), onnx=onnx, latency=latency)
    report.load_forms = load_forms
    return report


def test_rows_say_what_happened_to_every_layer(report):
    status = {r.name: (r.status, r.reason) for r in report.layers}
    assert status["conv1"] == ("excluded", "first convolution (kept by default)")
    assert status["fc1"] == ("excluded", "matches an exclude pattern")
    assert status["fc2"][0] == "excluded"
    # at 2%: conv2 (4,640 parameters) leaves 92 - 32 (bias) = 60 for CP ranks of 16+3+3+32 = 54 each: r=1;
    # conv3 (18,496) leaves 369 - 64 = 305 for ranks of 102: r=2
    compressed = [r for r in report.layers if r.status == "compressed"]
    assert [(r.name, r.ranks, r.params_compressed) for r in compressed] == [("conv2", {"r": 1}, 86),
                                                                            ("conv3", {"r": 2}, 268)]
    assert compressed and all(r.deploy_form == "factors:greedy" and r.load_form == "dense" and r.rel_error == 0.25
                              for r in compressed)
    assert report.layers_compressed == len(compressed) and report.onnx.factor_layers == len(compressed)


def test_json_round_trip_is_exact(report, tmp_path):
    write_report(tmp_path, report)
    back = read_report(tmp_path / "report.json")
    assert back == report
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["schema"] == 3 and doc["recipe"]["compress"]["format"] == "cp"
    assert doc["latency"]["runtimes"]["onnxruntime_cpu"]["1"]["speedup"] == 2.0
    # statuses are enums in the records and their plain values in the file
    assert {type(r.status) for r in back.layers} == {LayerStatus}
    assert [r["status"] for r in doc["layers"]] == [str(r.status) for r in report.layers]
    assert {r["status"] for r in doc["layers"]} == {"compressed", "excluded"}


def test_a_status_that_is_not_one_is_refused_naming_the_values(report, tmp_path):
    write_report(tmp_path, report)
    doc = json.loads((tmp_path / "report.json").read_text())
    doc["layers"][0]["status"] = "compress"  # selection's word, not a report's
    (tmp_path / "report.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"report\.json\.layers: expected list"):
        read_report(tmp_path / "report.json")
    with pytest.raises(UsageError, match="status: expected 'compressed' or 'orthogonal' or 'skipped' or 'excluded'"):
        from_data(LayerRow, doc["layers"][0], "row")


def test_markdown_renders_the_records(report):
    md = render_markdown(report)
    assert "| top-1 accuracy (`fashion-mnist`, 100 samples) | 90.00% | 80.00% | |" in md
    assert "| `onnxruntime_cpu` | `1` | 2.00 | 1.00 | 2.00x |" in md
    assert "the compressed model is not faster on PyTorch CPU at batch 1: 4.00 ms vs 2.00 ms" in md
    assert "max |error| 1e-06" in md and f"layers as factor chains: {report.onnx.factor_layers}" in md
    for row in report.layers:
        assert f"| `{row.name}` | `{row.status}` |" in md
    # how the forms were decided: the whole model's assignments, and per layer each candidate's times
    assert "| each layer its fastest form | 1.00 / 8.00 | **kept** |" in md
    assert "| every layer dense | 2.00 / 16.00 |  |" in md
    assert "| `conv2` | `factors:greedy` | 0.500 / 4.000 | 0.250 / 2.000 |" in md
    assert "## Load form" in md and "Form `dense` for every layer (not timed)." in md


def test_a_schema_2_report_is_read(report, tmp_path):
    """Before forms were timed per runtime, ONNX had one batch size and two times per layer."""
    write_report(tmp_path, report)
    doc = json.loads((tmp_path / "report.json").read_text())
    doc["schema"] = 2
    forms = doc["onnx"].pop("forms")
    doc.pop("load_forms")
    doc["onnx"].update(deploy_batch=1, deploy_form="auto",
                       layers=[{"name": c["name"], "form": c["form"], "flops_dense": 10, "flops_factors": 5,
                                "ms_dense": 0.5, "ms_factors": 0.25} for c in forms["layers"]])
    (tmp_path / "old.json").write_text(json.dumps(doc))
    back = read_report(tmp_path / "old.json")
    assert back.onnx.forms.batches == [1] and back.onnx.forms.picked == "auto"
    assert [c.ms for c in back.onnx.forms.layers] == [{"dense": {"1": 0.5}, "optimal": {"1": 0.25}}] * 2
    assert back.onnx.factor_layers == 2 and back.load_forms is None
