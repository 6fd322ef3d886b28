"""Seq-KD units: the compressed layers (with the norm fed by each) or the residual blocks, in forward order."""

import pytest

from tnncompress.compress import CompressConfig, compress_model, plan_model, select_layers
from tnncompress.distill import find_units
from tnncompress.models import create_model

from .conftest import teacher_and_student


def test_layer_units_of_the_small_cnn_take_the_norm_fed_by_each_layer():
    _, student = teacher_and_student()
    units = find_units(student, (1, 28, 28), "layer")
    assert [(u.name, u.norms, u.output) for u in units] == [
        ("conv2", ["bn2"], "bn2"), ("conv3", ["bn3"], "bn3"), ("fc1", [], "fc1")]


def _resnet32_student():
    model = create_model("resnet32", in_channels=1).eval()
    plans = plan_model(model, select_layers(model, (1, 28, 28), [], []), CompressConfig(format="cp", rate=0.2))
    return compress_model(model, plans)[0]


@pytest.mark.slow
def test_block_units_of_a_resnet_are_its_residual_blocks_in_forward_order():
    student = _resnet32_student()
    layers = find_units(student, (1, 28, 28), "layer")
    blocks = find_units(student, (1, 28, 28), "block")
    assert [u.name for u in blocks] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(5)]
    assert all(u.layers == [f"{u.name}.conv1", f"{u.name}.conv2"] for u in blocks)
    assert all(u.norms == [f"{u.name}.bn1", f"{u.name}.bn2"] for u in blocks)
    # every compressed layer is in exactly one block, and layer units follow the same order
    assert [n for u in blocks for n in u.layers] == [u.name for u in layers]
    assert all(u.norms == [u.name.replace("conv", "bn")] for u in layers)


@pytest.mark.slow
def test_seq_kd_by_blocks_trains_each_block_with_its_layers_and_norms(bundled_data):
    import torch

    from tnncompress.distill import Context, DistillConfig, KdData, distil

    train, test = bundled_data
    torch.manual_seed(0)
    teacher = create_model("resnet20", in_channels=1).eval()
    plans = plan_model(teacher, select_layers(teacher, (1, 28, 28), [], []), CompressConfig(format="cp", rate=0.2))
    student = compress_model(teacher, plans)[0]
    config = DistillConfig(algorithm="seq", seq_unit="block", steps=18, eval_limit=100, plan="optimal")
    result = distil(teacher, student, KdData(train, test, (1, 28, 28)), config, Context())
    units = result.phases
    assert [u.unit for u in units] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    for u in units:
        expected = sum(p.numel() for n in u.layers + u.norms for p in student.get_submodule(n).parameters())
        assert u.trained_params == expected and u.steps == 2
    assert all(torch.isfinite(p).all() for p in student.parameters())
