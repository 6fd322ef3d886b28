"""Seq-KD units: the compressed layers (with the norm fed by each) or the residual blocks, in forward order."""

from tnncompress.compress import compress_model, plan_model, select_layers
from tnncompress.distill.units import find_units
from tnncompress.models import create_model

from .conftest import teacher_and_student


def test_layer_units_of_the_small_cnn_take_the_norm_fed_by_each_layer():
    _, student = teacher_and_student()
    units = find_units(student, (1, 28, 28), "layer")
    assert [(u.name, u.norms, u.output) for u in units] == [
        ("conv2", ["bn2"], "bn2"), ("conv3", ["bn3"], "bn3"), ("fc1", [], "fc1")]


def _resnet32_student():
    model = create_model("resnet32", in_channels=1).eval()
    plans = plan_model(model, select_layers(model, (1, 28, 28), [], []), "cp", 0.2, "params", 3, None)
    return compress_model(model, plans, show_progress=False)[0]


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
