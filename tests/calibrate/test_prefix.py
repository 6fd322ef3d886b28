"""Layer inputs in forward order, with what is final kept: bit for bit what running the model from the
images gives, however the layers before were changed, with shared modules and in-place operations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.calibrate.prefix import LayerInputs
from tnncompress.capture import capture


class Block(nn.Module):
    """torchvision's pattern: one ReLU module called twice, in place, and the sum done in place."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.blocks = nn.Sequential(Block(4), Block(4))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.blocks(self.act(self.stem(x)))
        return self.head(x.mean((2, 3)))


LAYERS = ["stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "head"]


def _walk(model, images, budget, counted=None):
    """Each layer's inputs through LayerInputs, changing each layer once its inputs are taken (as a refit
    does); the reference inputs are captured afresh from the images at the same moment."""
    inputs = LayerInputs(model, (2, 6, 6), len(images), budget)
    got, want = [], []
    for name in LAYERS:
        batches = [images[i:i + 3] for i in range(0, len(images), 3)]
        want.append([capture(model, b, inputs=(name,))[(name, "input")] for b in batches])
        got.append(list(inputs.inputs(name, iter(batches))))
        with torch.no_grad():
            for p in model.get_submodule(name).parameters():
                p.mul_(1.5).add_(0.01)
    return got, want


@pytest.mark.parametrize("budget", [1 << 30, 0])
def test_layer_inputs_equal_a_fresh_pass_bit_for_bit(budget):
    torch.manual_seed(0)
    model = Net().eval()
    images = torch.randn(7, 2, 6, 6)
    got, want = _walk(model, images, budget)
    for name, g, w in zip(LAYERS, got, want, strict=True):
        assert len(g) == len(w) == 3
        assert all(torch.equal(a, b) for a, b in zip(g, w, strict=True)), name


class Counted(nn.Module):
    """Counts how often the wrapped module's computation actually runs."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.runs = inner, 0

    def forward(self, x):
        self.runs += 1
        return self.inner(x)


@pytest.mark.parametrize(("budget", "stem", "block"), [(1 << 30, 5, 7), (0, 13, 11)])
def test_what_is_final_is_not_run_again(budget, stem, block):
    torch.manual_seed(1)
    model = Net().eval()
    model.stem, model.blocks[0] = Counted(model.stem), Counted(model.blocks[0])
    names = [n.replace("stem", "stem.inner").replace("blocks.0.", "blocks.0.inner.") for n in LAYERS]
    images = torch.randn(6, 2, 6, 6)
    inputs = LayerInputs(model, (2, 6, 6), len(images), budget)
    for name in names:
        list(inputs.inputs(name, iter([images[:3], images[3:]])))
    # after the trace (1 run each), with room to keep outputs: the stem is entered in its own layer's pass
    # and runs in the next, which keeps its output (2 batches each); block 0 in the three passes up to the
    # one that keeps its whole output. Without: both in every pass from their own on
    assert (model.stem.runs, model.blocks[0].runs) == (stem, block)
    assert not any("forward" in vars(m) for m in model.modules())  # every wrapper removed
