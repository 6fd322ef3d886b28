"""model.onnx stores the factors (issue 26): every deployment form computes its weights from them in the
graph, onnxruntime folds that into constants when a session starts, and the file is as small as the
factors. Checked for every format against the graph that stores the products, in onnxruntime."""

from __future__ import annotations

import copy
import functools

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tnncompress.export import INPUT, OUTPUT, deployable, session, to_onnx, write_compressed
from tnncompress.export.onnx_graph import folds
from tnncompress.export.rebuild import Contraction, RebuiltLayer, factor_initializers, with_factor_weights
from tnncompress.formats import TensorizedLayer, get_format, list_formats, tensorize
from tnncompress.formats.base import KernelShape

SIZE = (16, 12, 12)


class Net(nn.Module):
    """Layers large enough that the factors, not the graph around them, make the file: a strided 3x3, a
    grouped 3x3, a 1x1 with circular padding, and a hidden linear layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(16, 48, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(48, 64, 3, padding=1, groups=2, bias=False)
        self.conv3 = nn.Conv2d(64, 64, 1, padding=1, padding_mode="circular")
        self.fc1 = nn.Linear(64 * 8 * 8, 96)
        self.fc2 = nn.Linear(96, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv3(torch.relu(self.conv2(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def compressed(fmt: str, rate: float = 0.2) -> nn.Module:
    """The net with its layers in `fmt` (a copy: the decompositions are made once per format and rate)."""
    return copy.deepcopy(_compressed(fmt, rate))


@functools.cache
def _compressed(fmt: str, rate: float) -> nn.Module:
    torch.manual_seed(0)
    net = Net().eval()
    f = get_format(fmt)
    for name in ("conv1", "conv2", "conv3", "fc1"):
        layer = net.get_submodule(name)
        w = layer.weight
        groups = getattr(layer, "groups", 1)
        shape = KernelShape(w.shape[0], w.shape[1], *(w.shape[2:] if w.ndim == 4 else (1, 1)), groups)
        tz = tensorize(shape.t, shape.in_channels) if f.reshaped else None
        ranks = f.ranks_for_budget(shape, tz, int(rate * w.numel()))
        net.set_submodule(name, TensorizedLayer.from_layer(layer, fmt, ranks, tz))
    return net


def run(graph: bytes, x: torch.Tensor) -> np.ndarray:
    return session(graph).run([OUTPUT], {INPUT: x.numpy()})[0]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list_formats())
@pytest.mark.parametrize("form", ["dense", "factors"])
def test_factor_weights_compute_what_stored_weights_do_and_fold(fmt, form):
    model = compressed(fmt)
    deployed, _ = deployable(model, SIZE, [1], form, runtime="onnxruntime")
    stored = to_onnx(deployed, SIZE)
    small_model = with_factor_weights(copy.deepcopy(deployed), model)
    small = to_onnx(small_model, SIZE, fold=False)
    x = torch.randn(5, *SIZE, generator=torch.Generator().manual_seed(1))
    want, got = run(stored, x), run(small, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)
    names = factor_initializers(small_model)
    held = {t.name for t in onnx.load_from_string(small).graph.initializer}
    assert names <= held and (names or form == "factors")  # the file holds the factors (a chain: the smaller of
    # its factors and its products)...
    assert folds(small, names)  # ... and onnxruntime consumes all of them when it creates a session
    assert len(small) <= 1.05 * len(stored)
    ops = {n.op_type for n in onnx.load_from_string(small).graph.node}
    assert ops <= {"Conv", "MatMul", "Reshape", "Transpose", "Relu", "Gemm", "Flatten", "Pad", "Add", "Mul", "Slice",
                   "Concat", "Shape", "Gather", "Unsqueeze", "ReduceSum", "Constant", "Cast"}, ops


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list_formats())
def test_the_file_is_the_size_of_the_factors(fmt, tmp_path):
    """model.onnx with factor weights within 10% of model.safetensors, for the dense form (what onnxruntime
    picks on small channel counts, as in the demo) and the factor chains alike."""
    model = compressed(fmt)
    write_compressed(tmp_path, model, "tnncompress:x", {}, SIZE)
    weights = (tmp_path / "model.safetensors").stat().st_size
    for form in ("dense", "factors"):
        deployed, _ = deployable(model, SIZE, [1], form, runtime="onnxruntime")
        small = to_onnx(with_factor_weights(deployed, model), SIZE, fold=False)
        assert len(small) <= 1.1 * weights, (form, len(small), weights)
        assert len(small) < 0.5 * len(to_onnx(deployable(model, SIZE, [1], "dense", runtime="onnxruntime")[0], SIZE))


def test_folds_says_no_when_a_factor_is_read_at_run_time():
    """The negative control of the folding check: a graph whose 'factor' meets the input is not folded."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "f.factors.0")
    graph = helper.make_graph([helper.make_node("MatMul", [INPUT, "f.factors.0"], [OUTPUT])], "g",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["b", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert not folds(model.SerializeToString(), {"f.factors.0"})


def test_a_contraction_sums_lone_modes_and_equals_einsum():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(s, generator=g) for s in ((3, 4, 5), (5, 6, 2), (2, 7, 3)))
    got = Contraction([a, b, c], [("i", "j", "k"), ("k", "l", "m"), ("m", "n", "i")], ("n", "j"))()
    torch.testing.assert_close(got, torch.einsum("ijk,klm,mni->nj", a, b, c), rtol=1e-5, atol=1e-5)
    lone = Contraction([a], [("i", "j", "k")], ("k", "i"))()  # j only in a, not in the output: summed
    torch.testing.assert_close(lone, a.sum(1).T)


def test_a_rebuilt_layer_is_its_dense_layer_with_any_padding():
    torch.manual_seed(0)
    for conv in (nn.Conv2d(6, 8, 3, padding="same", padding_mode="reflect"), nn.Conv2d(6, 8, (3, 2), padding="same"),
                 nn.Conv2d(6, 8, 3, stride=2, dilation=2, padding=2, padding_mode="circular")):
        layer = TensorizedLayer.from_layer(conv, "tk", {"r1": 4, "r2": 5})
        x = torch.randn(2, 6, 9, 9)
        with torch.no_grad():
            torch.testing.assert_close(RebuiltLayer(layer)(x), layer.eval()(x), rtol=1e-4, atol=1e-5)


def test_int4_storage_packs_two_levels_a_byte_low_nibble_first():
    from tnncompress.export.onnx_graph import to_int4

    values = np.array([-8, 7, -1, 0, 3, -5, 2], np.int8)  # odd count: the last byte is half used
    wide = np.array([-9, 1], np.int8)  # does not fit 4 bits: stays INT8
    nodes = [helper.make_node("Cast", [name], [f"{name}.f"], to=TensorProto.FLOAT) for name in ("q", "w")]
    nodes.append(helper.make_node("Concat", ["q.f", "w.f"], [OUTPUT], axis=0))
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [9])],
                              [numpy_helper.from_array(values, "q"), numpy_helper.from_array(wide, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    packed = onnx.load_from_string(to_int4(model.SerializeToString(), {"q", "w"}))
    q, w = packed.graph.initializer
    assert q.data_type == TensorProto.INT4 and w.data_type == TensorProto.INT8
    raw = np.frombuffer(q.raw_data, np.uint8)
    nibbles = np.stack([raw & 0xF, raw >> 4], 1).ravel()[:values.size].astype(np.int16)
    assert (np.where(nibbles > 7, nibbles - 16, nibbles) == values).all() and len(raw) == 4
    assert packed.opset_import[0].version == 21
    got = session(packed.SerializeToString()).run([OUTPUT], {})[0]
    assert (got == np.concatenate([values, wide]).astype(np.float32)).all()
