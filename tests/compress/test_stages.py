"""The decompose and export stages: layer selection, rank choice against the rate, Layer-Decomp of a
whole model, and the safetensors + structure.json round trip through tnncompress.load()."""

from __future__ import annotations

import pytest
import torch
import torchvision

import tnncompress
from tnncompress.compress import compress_model, plan_layer, select_layers
from tnncompress.errors import CheckpointError, UsageError
from tnncompress.export import write_compressed
from tnncompress.formats import TensorizedConv2d, list_formats
from tnncompress.io import load_model

SIZE = (1, 28, 28)


def _status(choices):
    return {c.info.name: (c.status, c.reason) for c in choices}


def test_default_selection(small_model):
    s = _status(select_layers(small_model, SIZE))
    assert s["conv1"] == ("excluded", "first convolution (kept by default)")
    assert s["fc2"] == ("excluded", "last linear layer (kept by default)")
    assert {n for n, (st, _) in s.items() if st == "compress"} == {"conv2", "conv3", "fc1"}


def test_include_exclude_patterns(small_model):
    s = _status(select_layers(small_model, SIZE, include=["conv*"], exclude=["re:conv[3]"]))
    assert s["conv1"][0] == "compress" and s["conv2"][0] == "compress"  # an explicit include wins
    assert s["conv3"] == ("excluded", "matches an exclude pattern")
    assert s["fc1"] == ("excluded", "not matched by an include pattern")
    with pytest.raises(UsageError, match="exclude 'layer9.*' matches no conv or linear layer"):
        select_layers(small_model, SIZE, exclude=["layer9.*"])
    with pytest.raises(UsageError, match="bad regular expression"):
        select_layers(small_model, SIZE, include=["re:("])


def test_depthwise_is_skipped():
    model = torchvision.models.mobilenet_v2(num_classes=10)
    s = _status(select_layers(model, (3, 32, 32)))
    assert s["features.1.conv.0.0"] == ("skipped", "depthwise convolution (nothing to factorise)")


@pytest.mark.parametrize("name", list_formats())
@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_plans_meet_the_rate(small_model, name, rate):
    for c in select_layers(small_model, SIZE):
        if c.status != "compress":
            continue
        plan = plan_layer(small_model.get_submodule(c.info.name), c.info, name, rate)
        if plan.ranks is None:
            assert "even rank 1 needs" in plan.reason
            continue
        assert plan.params_compressed <= rate * plan.params_original
        assert plan.params_original == c.info.params and plan.flops_original == c.info.flops


def test_rate_by_flops(small_model):
    c = next(c for c in select_layers(small_model, SIZE) if c.info.name == "conv3")
    module = small_model.get_submodule("conv3")
    plan = plan_layer(module, c.info, "tk", 0.3, rate_by="flops")
    assert plan.flops_compressed <= 0.3 * plan.flops_original
    larger = plan_layer(module, c.info, "tk", 0.6, rate_by="flops")
    assert larger.flops_compressed > plan.flops_compressed


def test_hand_ranks(small_model):
    c = next(c for c in select_layers(small_model, SIZE) if c.info.name == "conv2")
    plan = plan_layer(small_model.get_submodule("conv2"), c.info, "cp", ranks={"r": 7})
    assert plan.ranks == {"r": 7} and plan.params_compressed == 7 * (16 + 3 + 3 + 32) + 32


@pytest.mark.parametrize("name", ["cp", "mtt"])
def test_compress_save_load_roundtrip(small_model, tmp_path, name):
    choices = select_layers(small_model, SIZE)
    plans = [plan_layer(small_model.get_submodule(c.info.name), c.info, name, 0.2)
             for c in choices if c.status == "compress"]
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    student, results = compress_model(small_model, plans)
    assert all(torch.equal(before[k], v) for k, v in small_model.state_dict().items())  # teacher untouched
    assert isinstance(student.conv2, TensorizedConv2d) and not isinstance(student.conv1, TensorizedConv2d)
    assert all(0 < r.rel_error < 1 for r in results)
    structure = write_compressed(tmp_path / "out", student, "tnncompress:small_cnn",
                                 {"num_classes": 10, "in_channels": 1}, SIZE)
    assert [layer["name"] for layer in structure["layers"]] == ["conv2", "conv3", "fc1"]
    assert structure["layers"][0]["plan"]["input_shape"] == [1, 16, 28, 28]  # as the layer receives it
    loaded = tnncompress.load(tmp_path / "out")
    x = torch.randn(5, *SIZE)
    assert torch.equal(loaded(x), student.eval()(x))


@pytest.mark.slow
def test_torchvision_resnet18_roundtrip(tmp_path):
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), tmp_path / "r18.pt")
    loaded = load_model(tmp_path / "r18.pt", input_size="3,64,64")
    choices = select_layers(loaded.model, loaded.input_size)
    rate = 0.05  # small Tucker ranks: HOOI's sweeps are what this test would otherwise spend its time on
    plans = [plan_layer(loaded.model.get_submodule(c.info.name), c.info, "tk", rate)
             for c in choices if c.status == "compress"]
    student, _ = compress_model(loaded.model, plans)
    write_compressed(tmp_path / "out", student, loaded.arch, loaded.arch_kwargs, loaded.input_size)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(tnncompress.load(tmp_path / "out")(x), student.eval()(x))
    total_before = sum(p.params_original for p in plans)
    total_after = sum(p.params_compressed for p in plans)
    assert 0.9 * rate * total_before <= total_after <= rate * total_before


def test_load_refuses_what_is_not_an_output(tmp_path):
    with pytest.raises(UsageError, match="not a tnncompress output"):
        tnncompress.load(tmp_path)
    (tmp_path / "structure.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        tnncompress.load(tmp_path)
