"""`tnncompress run` from the command line: recipes, overrides, and bad input (one line, non-zero exit,
nothing half-written)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tnncompress.cli.app import app
from typer.testing import CliRunner

runner = CliRunner()
FAST = ["--no-latency", "--deploy-form", "flops", "-q"]


def invoke(*args):
    return runner.invoke(app, ["run", *map(str, args)])


@pytest.mark.slow
def test_cli_run_writes_a_recipe_that_repeats_the_run(tmp_path, small_cnn_checkpoint):
    first = tmp_path / "first"
    result = invoke(small_cnn_checkpoint, "--format", "mtt", "--rate", "0.1", "--out", first, "--json", *FAST)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["directory"] == str(first) and payload["format"] == "mtt"
    recipe = yaml.safe_load((first / "recipe.yaml").read_text())
    assert recipe["version"] == 2 and recipe["compress"]["format"] == "mtt" and recipe["compress"]["rate"] == 0.1
    second = tmp_path / "second"
    result = invoke("--recipe", first / "recipe.yaml", "--set", f"out={second}", *FAST)
    assert result.exit_code == 0, result.output
    a, b = (json.loads((d / "report.json").read_text()) for d in (first, second))
    assert [r["ranks"] for r in a["layers"]] == [r["ranks"] for r in b["layers"]]
    weights = [load_file(d / "model.safetensors") for d in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the same seed, the same factors
    # --set overrides the recipe, which overrides the defaults
    third = tmp_path / "third"
    result = invoke("--recipe", first / "recipe.yaml", "--set", "rate=0.05", "--out", third, *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((third / "report.json").read_text())["target_rate"] == 0.05


@pytest.mark.slow
def test_ranks_file_mixes_formats_and_sets_ranks(tmp_path, small_cnn_checkpoint):
    ranks = tmp_path / "ranks.yaml"
    ranks.write_text(yaml.safe_dump({"layers": {"conv2": {"format": "tk", "ranks": {"r1": 3, "r2": 5}},
                                                "conv3": {"format": "mcp"}}}))
    out = tmp_path / "out"
    result = invoke(small_cnn_checkpoint, "--format", "tt", "--rate", "0.1", "--ranks", ranks, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    layers = {r["name"]: r for r in json.loads((out / "report.json").read_text())["layers"]}
    assert layers["conv2"]["format"] == "tk" and layers["conv2"]["ranks"] == {"r1": 3, "r2": 5}
    assert layers["conv3"]["format"] == "mcp" and layers["fc1"]["format"] == "tt"
    # a report.json is a ranks file too: the same layers, formats and ranks
    again = tmp_path / "again"
    result = invoke(small_cnn_checkpoint, "--ranks", out / "report.json", "--out", again, *FAST)
    assert result.exit_code == 0, result.output
    layers_again = {r["name"]: r for r in json.loads((again / "report.json").read_text())["layers"]}
    assert all(layers_again[n]["ranks"] == layers[n]["ranks"] and layers_again[n]["format"] == layers[n]["format"]
               for n in layers)


@pytest.mark.slow
def test_existing_output_needs_force_and_is_replaced_atomically(tmp_path, small_cnn_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = invoke(small_cnn_checkpoint, "--rate", "0.1", "--out", out, *FAST)
    assert result.exit_code == 2 and "exists" in result.output and "--force" in result.output
    # a directory that is not a tnncompress output is never replaced, even with --force
    result = invoke(small_cnn_checkpoint, "--rate", "0.1", "--out", out, "--force", *FAST)
    assert result.exit_code == 2 and "not a tnncompress output" in result.output
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()  # an empty directory may be replaced
    result = invoke(small_cnn_checkpoint, "--rate", "0.1", "--out", out, "--force", *FAST)
    assert result.exit_code == 0, result.output
    first = (out / "report.json").read_text()
    result = invoke(small_cnn_checkpoint, "--rate", "0.05", "--out", out, "--force", *FAST)  # an output is
    assert result.exit_code == 0, result.output
    assert (out / "report.json").read_text() != first
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory or lock left behind


@pytest.mark.slow
def test_deploy_target_from_the_cli_times_real_layers_and_never_exceeds_the_budget(tmp_path, small_cnn_checkpoint):
    """The real timer on the bundled small CNN: whatever the machine measures, every layer either keeps the
    rate's ranks or gives parameters back and says so; the recipe records the target."""
    runs = {}
    for target in ("size", "onnxruntime-cpu"):
        out = tmp_path / target
        result = invoke(small_cnn_checkpoint, "-f", "cp", "-r", "0.1", "--deploy-target",
                                          target, "--deploy-batch", "1", "--no-latency", "--deploy-form", "flops",
                                          "-q", "--out", out)
        assert result.exit_code == 0, result.output
        runs[target] = {r["name"]: r for r in json.loads((out / "report.json").read_text())["layers"]}
        assert yaml.safe_load((out / "recipe.yaml").read_text())["compress"]["deploy_target"] == target
    for name, row in runs["onnxruntime-cpu"].items():
        before = runs["size"][name]
        if row["ranks"] != before["ranks"]:
            assert row["params_compressed"] < before["params_compressed"]
            assert all(r % 8 == 0 or r < 8 for r in row["ranks"].values()), row
            assert "for onnxruntime-cpu" in row["reason"] and "parameters given back" in row["reason"]
        else:
            assert row["params_compressed"] == before["params_compressed"]


BAD = [
    (["--rate", "0"], "--rate must be greater than 0, got 0.0"),
    (["--rate", "1.5"], "--rate must be at most 1, got 1.5"),
    (["--rate", "0.1", "--format", "nope"], "--format 'nope': use one of svd, cp"),
    (["--rate", "0.1", "--include", "layer9.*"], "--include 'layer9.*' matches no conv or linear layer"),
    (["--rate", "0.1", "--exclude", "re:("], "bad regular expression"),
    (["--rate", "0.1", "--rate-by", "speed"], "--rate-by 'speed': use one of params, flops"),
    (["--rate", "0.1", "--kd", "magic"], "kd 'magic'"),
    (["--rate", "0.1", "--set", "nonsense=1"], "unknown key nonsense"),
    (["--rate", "0.1", "--set", "rate=fast"], "--set: rate: expected float | None, got 'fast'"),
    (["--format", "mcp"], "give --rate"),
    (["--rate", "0.1", "--device", "tpu"], "--device 'tpu'"),
    (["--rate", "0.1", "--spectral", "clip:0"], "--spectral 'clip:0': the bound must be a positive number"),
    (["--rate", "0.1", "--spectral", "clip:-1"], "--spectral 'clip:-1': the bound must be a positive number"),
    (["--rate", "0.1", "--spectral", "clip"], "--spectral 'clip': clip needs a bound, e.g. clip:1"),
    (["--rate", "0.1", "--spectral", "flatten"], "--spectral 'flatten': use clip:C, divide:C or orthogonal"),
    (["--spectral", "orthogonal", "--include", "fc1"], "no selected layer can be an orthogonal convolution (fc1"),
    (["--rate", "0.1", "--spectral", "divide:nan"], "the bound must be a positive number"),
    (["--rate", "0.1", "--orthogonality", "-1"], "--orthogonality must be at least 0"),
    (["--rate", "0.1", "--spectral-every", "0"], "--spectral-every must be at least 1"),
    (["--rate", "0.1", "--deploy-target", "tpu"], "--deploy-target 'tpu': use one of size, onnxruntime-cpu"),
    (["--rate", "0.1", "--deploy-target", "onnxruntime-cpu", "--rank-multiple", "8"],
     "--deploy-target onnxruntime-cpu rounds the ranks --rate picks"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_options_fail_cleanly(tmp_path, small_cnn_checkpoint, args, message):
    out = tmp_path / "out"
    result = invoke(small_cnn_checkpoint, *args, "--out", out, *FAST)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("entry, message", [
    ({"layer9.conv": {"format": "cp"}}, "matches no layer selected for compression (no conv or linear layer"),
    ({"conv1": {"format": "cp"}}, "it names conv1, which is excluded: first convolution"),
    ({"conv2": {"format": "tk", "ranks": {"r": 3}}}, "needs ranks r1, r2, got r"),
    ({"conv2": {"format": "tk", "ranks": {"r1": 0, "r2": 1}}}, "ranks must map rank names to positive integers"),
    ({"conv2": {"formt": "tk"}}, "expected {format: NAME, ranks: {name: int}}"),
    ({"conv2": {"format": "xyz"}}, "unknown format 'xyz'"),
])
def test_ranks_file_that_does_not_match_the_model(tmp_path, small_cnn_checkpoint, entry, message):
    ranks = tmp_path / "ranks.yaml"
    ranks.write_text(yaml.safe_dump({"layers": entry}))
    result = invoke(small_cnn_checkpoint, "--rate", "0.1", "--ranks", ranks, "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_bad_recipe_files(tmp_path, small_cnn_checkpoint):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 7\nrate: 0.1\n")
    result = invoke(small_cnn_checkpoint, "--recipe", recipe, *FAST)
    assert result.exit_code == 2 and "recipe version 7" in result.output
    recipe.write_text("rate: [0.1\n")
    result = invoke(small_cnn_checkpoint, "--recipe", recipe, *FAST)
    assert result.exit_code == 2 and "not valid YAML" in result.output
    result = invoke(small_cnn_checkpoint, "--recipe", tmp_path / "missing.yaml", *FAST)
    assert result.exit_code == 2 and "recipe not found" in result.output


def test_help_lists_examples_and_exit_codes():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "--recipe" in result.output and "tnncompress run" in result.output and "3 the ONNX export" in result.output
