"""`tnncompress spectrum`: a checkpoint and a run's output directory, JSON, the chart, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from tnncompress.cli.app import app
from torch import nn
from typer.testing import CliRunner

from tnncompress.compress.ranks import kernel_shape
from tnncompress.export import write_compressed
from tnncompress.formats import TensorizedLayer, get_format, tensorize
from tnncompress.models import create_model

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_checkpoint_json_has_every_layer_and_the_network_bounds(ckpt_dir, tmp_path):
    chart = tmp_path / "s.svg"
    r = run("spectrum", ckpt_dir / "state.safetensors", "--json", "--top", "3", "--power-iters", "20",
            "--plot", chart)
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    layers = {row["name"]: row for row in payload["layers"]}
    assert set(layers) == {"conv1", "conv2", "conv3", "fc1", "fc2"}
    assert layers["fc1"]["exact"] and layers["fc1"]["method"] == "matrix"
    conv = layers["conv2"]  # zero padding: an upper bound above a power-iteration lower bound
    assert not conv["exact"] and conv["sigma_max_lower"] <= conv["sigma_max"]
    assert len(conv["values"]) == 3 and conv["values"] == sorted(conv["values"], reverse=True)
    net = payload["network"]
    assert net["upper"] is not None and net["lower"] <= net["upper"]
    assert chart.read_text().startswith("<svg") and "conv2" in chart.read_text()


def _student() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    for name, fmt in (("conv2", "cp"), ("conv3", "mcp"), ("fc1", "tt")):
        layer = model.get_submodule(name)
        shape = kernel_shape(layer)
        fmt_ = get_format(fmt)
        tz = tensorize(shape.t, shape.in_channels) if fmt_.reshaped else None
        ranks = fmt_.ranks_for_budget(shape, tz, shape.numel // 8)
        model.set_submodule(name, TensorizedLayer.from_layer(layer, fmt, ranks, tz))
    return model.eval()


@pytest.mark.slow
def test_output_directory_uses_the_core_of_compressed_layers(tmp_path):
    out = tmp_path / "out"
    write_compressed(out, _student(), "tnncompress:small_cnn", {"num_classes": 10, "in_channels": 1}, (1, 28, 28))
    r = run("spectrum", out, "--json", "--no-network", "--power-iters", "5")
    assert r.exit_code == 0, r.output
    layers = {row["name"]: row for row in json.loads(r.stdout)["layers"]}
    assert layers["conv2"]["path"] == "core" and layers["fc1"]["path"] == "core"
    assert layers["conv3"]["path"] == "kernel"  # mcp has no frame factors
    assert layers["conv1"]["path"] == "kernel"


def test_bad_input_gets_one_line_and_writes_nothing(ckpt_dir, tmp_path):
    chart = tmp_path / "s.svg"
    r = run("spectrum", ckpt_dir / "state.safetensors", "--input-size", "1,27,27", "--plot", chart)
    assert r.exit_code == 2 and "does not run at input size 1,27,27" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not chart.exists()
    r = run("spectrum", ckpt_dir / "state.safetensors", "--dtype", "float16")
    assert r.exit_code == 2 and "--dtype" in r.output
    r = run("spectrum", ckpt_dir / "state.safetensors", "--plot", tmp_path / "s.png")
    assert r.exit_code == 2 and "SVG" in r.output


def test_a_stride_that_does_not_divide_names_the_layer(tmp_path):
    from tnncompress.io import save_state_dict

    torch.manual_seed(0)
    model = create_model("resnet32", num_classes=10, in_channels=1)
    save_state_dict(model.state_dict(), tmp_path / "r.safetensors")
    r = run("spectrum", tmp_path / "r.safetensors", "--input-size", "1,27,27", "--no-network")
    assert r.exit_code == 2 and "layer layer2.0.conv1" in r.output and "stride 2" in r.output
