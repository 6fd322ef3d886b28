"""A batch's verdicts must mean what they say (issue 25, items 1-3, 6, 7): reuse verifies what it reuses,
summaries are true at every exit, run names cannot reach outside their directory, and the CI files are
well-formed, bounded and readable by the CI."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.batch.test_batch import SMALL_CNN, batch, counting_decompositions, wrap_stage, write
from tnncompress.batch import runner
from tnncompress.batch.summary import junit

MANIFEST, KEY_ENV = "manifest.json", "TNNCOMPRESS_REUSE_KEY"  # as the README documents them


@pytest.fixture
def victim(tmp_path) -> tuple[Path, bytes]:
    """A file of the user's next to the batch's output: it must survive everything byte for byte."""
    path = tmp_path / "victim.txt"
    content = b"the user's own file\n"
    path.write_bytes(content)
    return path, content


@pytest.fixture
def one(tmp_path):
    """A recipe folder with one run, its own copy of the checkpoint, and a gate that passes."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(SMALL_CNN.read_bytes())
    write(recipes, "run", model={"checkpoint": str(checkpoint)}, gates={"max_rate": 0.9})
    return recipes, checkpoint


def outcome(out: Path) -> dict:
    [run] = json.loads((out / "summary.json").read_text())["runs"]
    return run


def _forge_manifest(out: Path) -> None:
    """What a forger who knows the format does: recompute every artifact's hash."""
    doc = json.loads((out / MANIFEST).read_text())
    for name, entry in doc["artifacts"].items():
        data = (out / name).read_bytes()
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / MANIFEST).write_text(json.dumps(doc))


@pytest.mark.slow
def test_reuse_verifies_the_inputs_the_artifacts_and_the_options(one, tmp_path, monkeypatch, victim):
    recipes, checkpoint = one
    out = tmp_path / "out"
    calls = counting_decompositions(monkeypatch)
    assert batch(recipes, "-o", out).exit_code == 0
    run_dir = out / "run"
    assert (run_dir / MANIFEST).is_file() and calls == ["run"]
    rate = json.loads((run_dir / "report.json").read_text())["params"]["rate"]

    # untouched: reused, nothing recomputed but the parameter counts
    calls.clear()
    assert batch(recipes, "-o", out).exit_code == 0 and calls == [] and outcome(out)["reused"]

    # a gate the run misses stays missed when report.json is edited to pass it, manifest forged or not
    report = json.loads((run_dir / "report.json").read_text())
    report["params"]["rate"] = 0.001
    (run_dir / "report.json").write_text(json.dumps(report))
    r = batch(recipes, "-o", out, "--gate", f"max_rate={rate / 2}")
    assert r.exit_code == 4 and not outcome(out)["reused"] and "report.json changed" in outcome(out)["not_reused"]
    report = json.loads((run_dir / "report.json").read_text())
    report["params"]["rate"] = 0.001
    (run_dir / "report.json").write_text(json.dumps(report))
    _forge_manifest(run_dir)
    calls.clear()
    r = batch(recipes, "-o", out, "--gate", f"max_rate={rate / 2}")
    assert r.exit_code == 4 and calls == [] and outcome(out)["reused"]  # reused, but judged on the files:
    assert outcome(out)["gates"][0]["measured"] == pytest.approx(rate) and outcome(out)["status"] == "failed"

    # deleted artifacts are not a completed run
    (run_dir / "model.onnx").unlink()
    (run_dir / "model.safetensors").unlink()
    calls.clear()
    assert batch(recipes, "-o", out).exit_code == 0 and calls == ["run"]
    assert "is missing" in outcome(out)["not_reused"] and (run_dir / "model.onnx").is_file()

    # an option that changes a measured figure (the test samples) or an artifact (the ONNX form) reruns,
    # while a gate alone is judged again without rerunning
    changes = []
    for change in (["evaluate.limit=100"], ["export.deploy_form=dense"]):
        changes += ["--set", *change]
        calls.clear()
        assert batch(recipes, "-o", out, *changes).exit_code == 0 and calls == ["run"], change
    calls.clear()
    assert batch(recipes, "-o", out, *changes, "--gate", "max_rate=0.95").exit_code == 0
    assert calls == [] and outcome(out)["reused"]

    # a replaced checkpoint (here by garbage) is another input: the run is redone, and fails
    checkpoint.write_bytes(b"garbage, not weights")
    r = batch(recipes, "-o", out, *changes)
    assert r.exit_code == 1 and outcome(out)["status"] == "error" and not outcome(out)["reused"]
    assert "inputs changed: checkpoint" in outcome(out)["not_reused"]
    assert victim[0].read_bytes() == victim[1]


@pytest.mark.slow
def test_with_a_reuse_key_an_unsigned_or_forged_manifest_is_not_trusted(one, tmp_path, monkeypatch):
    recipes, _ = one
    out = tmp_path / "out"
    calls = counting_decompositions(monkeypatch)
    assert batch(recipes, "-o", out).exit_code == 0  # unsigned
    monkeypatch.setenv(KEY_ENV, "ci-secret")
    calls.clear()
    assert batch(recipes, "-o", out).exit_code == 0 and calls == ["run"]  # rerun, now signed
    assert "not signed" in outcome(out)["not_reused"]
    calls.clear()
    assert batch(recipes, "-o", out).exit_code == 0 and calls == [] and outcome(out)["reused"]
    report = json.loads((out / "run" / "report.json").read_text())
    report["accuracy"]["compressed"]["top1"] = 1.0
    (out / "run" / "report.json").write_text(json.dumps(report))
    _forge_manifest(out / "run")  # hashes recomputed, but without the key: the signature no longer holds
    calls.clear()
    assert batch(recipes, "-o", out).exit_code == 0 and calls == ["run"]
    assert "not signed" in outcome(out)["not_reused"]


@pytest.mark.slow
def test_an_interrupted_batch_leaves_no_summary_that_claims_a_pass(tmp_path, monkeypatch, victim):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "a")
    write(recipes, "b")
    out = tmp_path / "out"
    assert batch(recipes, "-o", out).exit_code == 0  # an earlier batch: everything passed
    write(recipes, "a", compress={"rate": 0.25})
    write(recipes, "b", compress={"rate": 0.25})
    seen = {}
    def decompose(run, state):
        name = Path(state.recipe.out).name
        # while a run works, the summaries say the batch is running and nothing after it has passed
        seen[name] = json.loads((out / "summary.json").read_text())
        suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
        seen[name + ".junit"] = {c.get("name"): [e.tag for e in c] for c in suite.findall("testcase")}
        if name == "b":
            raise KeyboardInterrupt
        return run(state)

    wrap_stage(monkeypatch, "layer_decomp", decompose)
    r = batch(recipes, "-o", out)
    assert r.exit_code == 130, r.output
    assert seen["a"]["state"] == "running" and seen["a"]["not_run"] == ["a", "b"] and seen["a"]["total"] == 0
    assert "error" in seen["a.junit"]["a"] and "error" in seen["a.junit"]["b"]
    assert seen["b"]["state"] == "running" and seen["b"]["passed"] == 1 and seen["b"]["not_run"] == ["b"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["state"] == "interrupted" and summary["not_run"] == ["b"] and summary["passed"] == 1
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["b"].find("error") is not None and suite.get("errors") == "1"
    assert "Interrupted" in (out / "summary.md").read_text() and "interrupted" in (out / "summary.html").read_text()
    assert victim[0].read_bytes() == victim[1]


@pytest.mark.parametrize("name", ["..", ".", ".a.partial", ".hidden", "summary.json", "JUNIT.xml"])
def test_a_recipe_name_that_is_not_a_run_directory_is_refused(tmp_path, monkeypatch, victim, name):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "a")
    write(recipes, name)
    out = tmp_path / "out"
    calls = counting_decompositions(monkeypatch)
    r = batch(recipes, "-o", out)
    assert r.exit_code == 2 and f"{name}.yaml" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert calls == [] and not out.exists() and victim[0].read_bytes() == victim[1]


def test_names_that_differ_only_in_case_collide(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "Model")
    write(recipes, "model")
    r = batch(recipes, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "would both write" in r.output


def test_an_error_message_with_control_characters_and_megabytes_stays_well_formed_and_bounded(
        tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "a")

    def explode(*args, **kwargs):
        raise RuntimeError("\x01\x1b[2J\x0b" + "x" * 3_000_000)

    monkeypatch.setattr(runner, "run", explode)
    out = tmp_path / "out"
    assert batch(recipes, "-o", out).exit_code == 1
    text = (out / "junit.xml").read_text()
    assert len(text) < 100_000 and (out / "summary.md").stat().st_size < 20_000
    case = ET.fromstring(text).find("testsuite").find("testcase")  # parses: no control character
    message = case.find("error").get("message")
    assert message.startswith("unexpected RuntimeError: \\x01\\x1b[2J") and "(3,000,031 characters)" in message
    assert "\x1b" not in (out / "summary.md").read_text() and "\x1b" not in (out / "summary.html").read_text()


def test_junit_holds_any_string_a_file_can_carry():
    from tnncompress.batch.runner import Outcome
    weird = "".join(map(chr, range(0, 0x20))) + "\ud800\ufffe<&>\"'" + "\U0001f600"
    o = Outcome(weird, weird, {}, weird, "error", message=weird, detail=weird)
    root = ET.fromstring(junit([o]).encode())
    case = root.find("testsuite").find("testcase")
    assert case.get("name").endswith("\U0001f600") and "<&>" in case.find("error").get("message")


def test_summaries_and_junit_are_readable_like_every_other_output(one, tmp_path):
    recipes, _ = one
    out = tmp_path / "out"
    umask = os.umask(0o022)
    try:
        assert batch(recipes, "-o", out).exit_code == 0
    finally:
        os.umask(umask)
    for name in ("summary.json", "summary.md", "junit.xml", "summary.html", "run/report.json", "run/manifest.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_batch_out_that_is_a_file_is_refused(one, tmp_path):
    recipes, _ = one
    target = tmp_path / "file"
    target.write_text("mine")
    r = batch(recipes, "-o", target)
    assert r.exit_code == 2 and "not a directory" in r.output and target.read_text() == "mine"
