"""timm architectures: `--arch timm:NAME`, detection when timm is installed, and a clear message when it
is not. Two timm CNNs whose layers torchvision's do not have: a ResNet with a deep ("tiered") stem and
average-pool downsampling (resnet10t), and an EfficientNet with depthwise convolutions and
squeeze-excite blocks (tinynet_e)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.io import load_model, timm_models
from tnncompress.report import read_report

timm = pytest.importorskip("timm", reason="timm is an optional extra: pip install 'tnncompress[timm]'")
runner = CliRunner()
FAST = ["--input-size", "3,32,32", "--no-latency", "--deploy-form", "flops", "--load-form", "factors", "-q"]


@pytest.fixture(scope="module")
def timm_checkpoints(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("timm")
    paths = {}
    for name in ("resnet10t", "tinynet_e"):
        torch.manual_seed(0)
        paths[name] = d / f"{name}.pt"
        torch.save(timm.create_model(name, pretrained=False, num_classes=10).state_dict(), paths[name])
    return paths


@pytest.mark.slow
@pytest.mark.parametrize(("name", "args", "layers"), [
    # the deep stem's second and third convolutions (the first is left dense) and a block's first
    ("resnet10t", ["--exclude", "layer3.*", "--exclude", "layer4.*"], ("conv1.3", "conv1.6", "layer1.0.conv1")),
    # a squeeze-excite block's 1x1 convolutions and an inverted residual's pointwise convolution
    ("tinynet_e", [], ("blocks.1.0.se.conv_reduce", "blocks.1.0.conv_pwl")),
])
def test_a_timm_model_is_compressed_and_exported_to_onnx(timm_checkpoints, tmp_path, name, args, layers):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(timm_checkpoints[name]), "--arch", f"timm:{name}", "-f", "tk", "-r", "0.3",
                            *args, *FAST, "-o", str(out)])
    assert r.exit_code == 0, r.output
    report = read_report(out / "report.json")
    assert report.model.arch == f"timm:{name}"
    rows = {row.name: row for row in report.layers}
    assert all(rows[layer].status in ("compressed", "skipped") for layer in layers), \
        {layer: rows[layer].status for layer in layers}
    assert any(rows[layer].status == "compressed" for layer in layers)
    assert report.params.compressed < report.params.original
    assert report.onnx.check.max_abs_error < 1e-3
    if name == "tinynet_e":  # depthwise convolutions are recognised as such
        depthwise = [row for row in report.layers if row.name.endswith("conv_dw")]
        assert depthwise and all(row.status != "compressed" or row.format for row in depthwise)


@pytest.mark.slow
def test_a_timm_state_dict_is_detected_when_timm_is_installed(timm_checkpoints):
    loaded = load_model(timm_checkpoints["resnet10t"], input_size="3,32,32")
    assert str(loaded.describe().arch) == "timm:resnet10t"


def test_without_timm_the_message_names_the_extra(tmp_path, monkeypatch, timm_checkpoints):
    monkeypatch.setattr(timm_models, "available", lambda: False)
    r = runner.invoke(app, ["run", str(timm_checkpoints["tinynet_e"]), "--arch", "timm:tinynet_e", "-f", "tk",
                            "-r", "0.3", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "tnncompress[timm]" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_unknown_timm_name_is_refused_in_one_line(tmp_path, timm_checkpoints):
    r = runner.invoke(app, ["run", str(timm_checkpoints["tinynet_e"]), "--arch", "timm:tinynet_z", "-f", "tk",
                            "-r", "0.3", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "timm has no model 'tinynet_z'" in r.output and "tinynet_e" in r.output, r.output
