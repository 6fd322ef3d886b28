"""load(DIR) in the form recorded at export: each layer dense or a factor chain with its plan's path,
the same function as the trainable factors; the recorded path is validated like any file input."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tnncompress
from tnncompress.compress.ranks import kernel_shape
from tnncompress.einsum import contract_expression
from tnncompress.einsum.paths import check_path, naive_path, path_cost
from tnncompress.errors import CheckpointError, UsageError
from tnncompress.export import deployable, tensorized_inputs, write_compressed
from tnncompress.export.deploy import choice, fixed_choices
from tnncompress.formats import TensorizedLayer, get_format, tensorize
from tnncompress.formats.base import KernelShape
from tnncompress.models import create_model

SIZE = (1, 28, 28)


def _student() -> nn.Module:
    """small_cnn with conv2 as CP, conv3 as Tucker-2, fc1 as TT, each at an eighth of its parameters."""
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    for name, fmt in (("conv2", "cp"), ("conv3", "tk"), ("fc1", "tt")):
        layer = model.get_submodule(name)
        shape = kernel_shape(layer)
        ranks = get_format(fmt).ranks_for_budget(shape, None, shape.numel // 8)
        model.set_submodule(name, TensorizedLayer.from_layer(layer, fmt, ranks))
    return model.eval()


def _write(tmp_path, student, load_forms) -> dict:
    return write_compressed(tmp_path / "out", student, "tnncompress:small_cnn", {"num_classes": 10, "in_channels": 1},
                            SIZE, load_forms=load_forms)


@pytest.mark.parametrize("assignment", ["dense", "factors", "mixed", "measured"])
def test_the_recorded_load_form_round_trips(tmp_path, assignment):
    student = _student()
    if assignment == "measured":
        _, decision = deployable(student, SIZE, [1, 4], "auto", runtime="pytorch", min_time=0.01, model_min_time=0.02)
        forms = decision.layers
    else:
        inputs = tensorized_inputs(student, SIZE)
        forms = fixed_choices(student, inputs, "dense" if assignment == "dense" else "factors")
        if assignment == "mixed":  # conv2 dense, the others a chain; conv3 by left-to-right order
            forms[0] = choice("conv2", student.conv2, inputs["conv2"], "dense")
            forms[1] = choice("conv3", student.conv3, inputs["conv3"], "naive",
                              [[0, 1], [4, 2], [5, 3]])
    structure = _write(tmp_path, student, forms)
    recorded = {r["name"]: r["load"] for r in structure["layers"]}
    assert recorded == {c.name: {"form": c.form, "plan": c.plan, "path": c.path} for c in forms}

    fast = tnncompress.load(tmp_path / "out")
    for c in forms:
        module = fast.get_submodule(c.name)
        if c.form == "dense":
            assert type(module) in (nn.Conv2d, nn.Linear)
        else:  # a frozen chain following the recorded path
            assert isinstance(module, TensorizedLayer) and module.bound is not None and not len(module.factors)
            assert [list(s) for s in module.optimize] == c.path
    x = torch.randn(6, *SIZE)
    with torch.no_grad():
        want = student(x)
        torch.testing.assert_close(fast(x), want, rtol=1e-4, atol=1e-5)
        # the trainable form is bit-identical and trainable; "dense" is the same function
        trainable = tnncompress.load(tmp_path / "out", form="factors")
        assert torch.equal(trainable(x), want)
        dense = tnncompress.load(tmp_path / "out", form="dense")
        torch.testing.assert_close(dense(x), want, rtol=1e-4, atol=1e-5)
    assert all(isinstance(trainable.get_submodule(c.name), TensorizedLayer) for c in forms)
    assert all(type(dense.get_submodule(c.name)) in (nn.Conv2d, nn.Linear) for c in forms)


def test_an_output_without_load_forms_loads_its_factors(tmp_path):
    student = _student()
    _write(tmp_path, student, ())
    model = tnncompress.load(tmp_path / "out")
    assert isinstance(model.conv2, TensorizedLayer) and len(model.conv2.factors)


def test_a_chain_refuses_another_input_size_in_one_line(tmp_path):
    student = _student()
    _write(tmp_path, student, fixed_choices(student, tensorized_inputs(student, SIZE), "factors"))
    chain = tnncompress.load(tmp_path / "out").conv2
    with pytest.raises(ValueError, match=r"planned for 28x28 inputs, got 20x20; .*form='factors'"):
        chain(torch.randn(1, 16, 20, 20))
    with pytest.raises(UsageError, match="form must be one of fast, factors, dense"):
        tnncompress.load(tmp_path / "out", form="quick")


@pytest.mark.parametrize("path, why", [
    ([[0, 0], [1, 2], [3, 4]], "does not join two distinct live nodes"),
    ([[0, 1], [2, 3]], "leaves 3 nodes"),
    ([[0, 9], [1, 2], [3, 4]], "does not join"),
    ("01", "expected a pair"),
    (None, "TypeError"),
])
def test_a_tampered_path_is_refused(tmp_path, path, why):
    student = _student()
    _write(tmp_path, student, fixed_choices(student, tensorized_inputs(student, SIZE), "factors"))
    structure_file = tmp_path / "out" / "structure.json"
    structure = json.loads(structure_file.read_text())
    structure["layers"][0]["load"]["path"] = path
    structure_file.write_text(json.dumps(structure))
    with pytest.raises(CheckpointError, match=f"layer record 'conv2': its load form is invalid .*{why}"):
        tnncompress.load(tmp_path / "out")
    assert isinstance(tnncompress.load(tmp_path / "out", form="factors").conv2, TensorizedLayer)


@pytest.mark.slow
def test_a_path_that_would_exhaust_memory_is_refused(tmp_path, monkeypatch):
    """Left to right through a reshaped CP at a high rank materialises a huge intermediate: a file
    may not ask for it, though the path itself is well formed. (The rule's floor, 16M elements, is
    lowered so that a small model shows it.)"""
    monkeypatch.setattr("tnncompress.einsum.autotune.MEMORY_FLOOR", 1)
    torch.manual_seed(0)
    model = create_model("small_cnn").eval()
    conv = model.conv3
    shape = KernelShape(*conv.weight.shape)
    tz = tensorize(shape.t, shape.in_channels)
    ranks = get_format("mcp").ranks_for_budget(shape, tz, shape.numel)
    model.conv3 = TensorizedLayer.from_layer(conv, "mcp", ranks, tz)
    inputs = tensorized_inputs(model, SIZE)
    forms = fixed_choices(model, inputs, "factors")
    write_compressed(tmp_path / "out", model, "tnncompress:small_cnn", {"num_classes": 10, "in_channels": 1}, SIZE,
                     load_forms=forms)
    n = len(model.conv3.factors) + 1
    naive = [list(step) for step in naive_path(n)]
    expr = model.conv3.plan_for(inputs["conv3"])
    assert path_cost(expr.network, check_path(n, naive))[1] > 64 * path_cost(expr.network, expr.path)[1]
    structure_file = tmp_path / "out" / "structure.json"
    structure = json.loads(structure_file.read_text())
    structure["layers"][0]["load"]["path"] = naive
    structure_file.write_text(json.dumps(structure))
    with pytest.raises(CheckpointError, match="exceed the memory the planner allows"):
        tnncompress.load(tmp_path / "out")


def test_an_explicit_path_plans_like_a_strategy():
    """contract_expression takes an SSA path as opt_einsum does, and computes the same contraction."""
    g = torch.Generator().manual_seed(0)
    x, a, h, w, b = (torch.randn(s, generator=g, dtype=torch.float64)
                     for s in ((2, 5, 9, 9), (4, 5), (4, 3), (4, 3), (4, 6)))
    text = "bshw,rs,rh,rw,rt->bthw|hw"
    shapes = [t.shape for t in (x, a, h, w, b)]
    optimal = contract_expression(text, *shapes, padding=1)
    for path in ([(0, 1), (5, 2), (6, 3), (7, 4)], [(2, 3), (0, 1), (5, 6), (7, 4)]):
        expr = contract_expression(text, *shapes, padding=1, optimize=path)
        assert expr.path == path
        torch.testing.assert_close(expr(x, a, h, w, b), optimal(x, a, h, w, b), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="leaves 2 nodes"):
        contract_expression(text, *shapes, padding=1, optimize=[(0, 1), (2, 3), (5, 6)])
