"""Evaluation runs a stock-layer model channels-last on CPU and leaves it as it was; the metrics are those of
the contiguous model (to float32 rounding); a model with layers of its own is not switched."""

from __future__ import annotations

import torch
from torch import nn

from tnncompress.data.datasets import ClassificationData, TensorImageDataset
from tnncompress.evaluate import evaluate
from tnncompress.evaluate.loop import cpu_layout
from tnncompress.formats import TensorizedLayer


class Scale(nn.Module):
    """A user's own parameterised layer."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.s


def _net(extra: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)]
    net = nn.Sequential(*layers, *([extra] if extra is not None else [])).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net


def _data(n: int = 96) -> ClassificationData:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 5, (n,), generator=g)
    return ClassificationData(TensorImageDataset(images, labels, mean=(0.5,) * 3, std=(0.25,) * 3), 5, (3, 12, 12),
                              "random")


def test_a_stock_model_is_switched_for_the_evaluation_and_back():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with cpu_layout(net, "cpu") as layout:
        assert layout == torch.channels_last and net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(t.is_contiguous() for t in net.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    data = _data()
    got = evaluate(net, data, batch_size=32)
    images, labels = map(torch.stack, zip(*(data.dataset[i] for i in range(len(data))), strict=True))
    with torch.no_grad():  # the contiguous model, by hand
        logits = net(images)
    nll = float(nn.functional.cross_entropy(logits.double(), labels))
    assert got.top1 == float((logits.argmax(1) == labels).double().mean())
    assert abs(got.nll - nll) < 1e-5 * max(1.0, nll)
    assert all(t.is_contiguous() for t in net.state_dict().values())


def test_a_model_with_layers_of_its_own_or_tensorial_ones_is_left_contiguous():
    assert_left = []
    for net in (_net(Scale()), nn.Sequential(TensorizedLayer.from_layer(nn.Conv2d(8, 8, 3), "cp", {"r": 2}))):
        with cpu_layout(net, "cpu") as layout:
            assert_left.append(layout == torch.contiguous_format)
    assert assert_left == [True, True]
    already = _net().to(memory_format=torch.channels_last)  # the user's own layout is not undone
    with cpu_layout(already, "cpu") as layout:
        assert layout == torch.contiguous_format
    assert already[0].weight.is_contiguous(memory_format=torch.channels_last)
