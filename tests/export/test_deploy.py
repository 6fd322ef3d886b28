"""The deployment form and its ONNX graph: every form computes what the compressed model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.errors import ExportError
from tnncompress.export import deployable, operator_counts, to_onnx, verify
from tnncompress.formats import TensorizedLayer, get_format, list_formats, tensorize
from tnncompress.formats.base import KernelShape


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.shortcut = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.fc = nn.Linear(12 * 5 * 5, 6)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x) + self.shortcut(x)).flatten(1))


def _compressed(fmt: str) -> nn.Module:
    torch.manual_seed(0)
    net = Net().eval()
    f = get_format(fmt)
    for name in ("conv", "shortcut", "fc"):
        layer = net.get_submodule(name)
        w = layer.weight
        shape = KernelShape(w.shape[0], w.shape[1], *(w.shape[2:] if w.ndim == 4 else (1, 1)))
        tz = tensorize(shape.t, shape.in_channels) if f.reshaped else None
        ranks = f.ranks_for_budget(shape, tz, w.numel() // 3)
        net.set_submodule(name, TensorizedLayer.from_layer(layer, fmt, ranks, tz))
    return net


@pytest.mark.parametrize("fmt", list_formats())
@pytest.mark.parametrize("form", ["dense", "factors", "flops", "auto"])
def test_every_form_computes_the_same_function(fmt, form):
    model = _compressed(fmt)
    deployed, choices = deployable(model, (8, 9, 9), batch=1, form=form)
    assert [c.name for c in choices] == ["conv", "shortcut", "fc"]
    if form in ("dense", "factors"):
        assert all(c.form == form for c in choices)
    if form == "auto":
        assert all(c.ms_dense > 0 and c.ms_factors > 0 for c in choices)
    x = torch.randn(5, 8, 9, 9)  # another batch size than the one the forms were chosen for
    with torch.no_grad():
        want = model(x)
        got = deployed(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    # the original is untouched: its factors are still trainable parameters
    assert all(isinstance(model.get_submodule(n), TensorizedLayer) and len(model.get_submodule(n).factors)
               for n in ("conv", "shortcut", "fc"))


@pytest.mark.parametrize("fmt", ["cp", "mtt", "tr"])
def test_onnx_of_the_factor_chain_is_plain_and_checked(fmt):
    model = _compressed(fmt)
    deployed, _ = deployable(model, (8, 9, 9), form="factors")
    graph = to_onnx(deployed, (8, 9, 9))
    ops = operator_counts(graph)
    assert ops["Conv"] >= 3 and "Einsum" not in ops  # weight-only steps folded into initialisers
    result = verify(graph, model, (8, 9, 9), batches=(1, 4))
    assert result.matches and result.max_abs_error < 1e-4


def test_a_graph_that_disagrees_fails_verification():
    model = _compressed("cp")
    graph = to_onnx(deployable(model, (8, 9, 9), form="dense")[0], (8, 9, 9))
    with torch.no_grad():
        model.fc.bias += 1.0  # the PyTorch model changes after the export
    with pytest.raises(ExportError, match="onnxruntime differs from PyTorch"):
        verify(graph, model, (8, 9, 9))


def test_a_model_the_exporter_cannot_trace_is_a_clear_error():
    class Adaptive(nn.Module):
        def forward(self, x):
            return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    with pytest.raises(ExportError, match="cannot be exported to ONNX .*onnx=False skips the export"):
        to_onnx(Adaptive(), (3, 7, 7))
