"""Architecture specs, strict loading with clear mismatch messages, and detection from a state dict."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tnncompress.errors import CheckpointError, UsageError
from tnncompress.io import ArchSpec, build_model, detect_arch, load_model, parse_arch
from tnncompress.models import create_model, registry


def test_parse_arch():
    assert parse_arch("torchvision:resnet18") == ArchSpec("torchvision", "resnet18")
    assert parse_arch("tnncompress:resnet32") == ArchSpec("tnncompress", "resnet32")
    assert parse_arch("tests.user_models:make_net") == ArchSpec("python", "tests.user_models:make_net")
    for bad in ("resnet18", "torchvision:nope", "tnncompress:nope", ":x", "a:"):
        with pytest.raises(UsageError):
            parse_arch(bad)


def test_detect_torchvision_with_other_class_count():
    state = torchvision.models.resnet18(num_classes=37).state_dict()
    assert detect_arch(state) == [ArchSpec("torchvision", "resnet18")]
    model = build_model(ArchSpec("torchvision", "resnet18"), state)
    assert model.fc.out_features == 37


def test_detect_zoo_one_channel():
    state = create_model("resnet32", in_channels=1, num_classes=7).state_dict()
    assert detect_arch(state) == [ArchSpec("tnncompress", "resnet32")]
    model = build_model(ArchSpec("tnncompress", "resnet32"), state)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7


def test_detect_nothing():
    assert detect_arch({"weird.weight": torch.zeros(3, 3)}) == []


def test_ambiguous_detection_lists_candidates(tmp_path, request):
    twin = registry.ModelEntry("small_cnn_twin", registry.get_entry("small_cnn").factory, (1, 28, 28), "twin")
    registry.MODELS.add("small_cnn_twin", twin)
    request.addfinalizer(lambda: registry.MODELS.remove("small_cnn_twin"))
    torch.save(create_model("small_cnn").state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="several architectures: tnncompress:small_cnn, "
                                              "tnncompress:small_cnn_twin"):
        load_model(tmp_path / "m.pt")


def test_undetectable(tmp_path):
    torch.save({"weird.weight": torch.zeros(3, 3)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="pass arch"):
        load_model(tmp_path / "w.pt")


def test_mismatch_messages(ckpt_dir):
    with pytest.raises(CheckpointError, match=r"1 shape mismatches \(conv2.weight: checkpoint \[8, 16, 3, 3\]"):
        load_model(ckpt_dir / "wrong_shape.pt", arch="tnncompress:small_cnn")
    with pytest.raises(CheckpointError, match=r"2 missing keys \(fc2.weight, fc2.bias\)"):
        load_model(ckpt_dir / "missing_keys.pt", arch="tnncompress:small_cnn")
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_model(ckpt_dir / "state.pt", arch="tnncompress:resnet20")


def test_user_factory(ckpt_dir, small_model):
    loaded = load_model(ckpt_dir / "state.pt", arch="tests.user_models:make_net")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded.model(x), small_model(x))
    with pytest.raises(UsageError, match="cannot import"):
        load_model(ckpt_dir / "state.pt", arch="no_such_module_xyz:f")
    with pytest.raises(UsageError, match="no callable"):
        load_model(ckpt_dir / "state.pt", arch="tests.user_models:missing")


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    model = create_model("resnet20")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").arch == "tnncompress:resnet20"


def test_input_size_defaults(ckpt_dir):
    assert load_model(ckpt_dir / "state.pt").input_size == (1, 28, 28)
    assert load_model(ckpt_dir / "state.pt", input_size="1,32,32").input_size == (1, 32, 32)
