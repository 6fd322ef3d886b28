"""The layer inventory against hand counts: parameters, FLOPs (a multiply-accumulate is 2) from the
definition of each layer, and the reasons a layer is not compressible."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tnncompress.errors import DataError
from tnncompress.inspect import forward_probe, layer_table, summarise


class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 5, stride=2, padding=2)  # 20x20 -> 10x10
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=2, bias=False)
        self.seq = nn.Conv1d(12, 4, 1)  # over the flattened rows: an unsupported weighted layer
        self.head = nn.Linear(4 * 100, 7)

    def forward(self, x):
        x = self.grouped(self.depthwise(self.stem(x)))
        x = self.seq(x.flatten(2)).flatten(1)
        return self.head(x)


def _conv_flops(out_c, out_h, out_w, in_per_group, kh, kw):
    return 2 * out_c * out_h * out_w * in_per_group * kh * kw


def test_parameters_flops_and_reasons_match_hand_counts():
    model = Zoo()
    rows = {r.name: r for r in layer_table(model, (3, 20, 20))}
    assert rows["stem"].params == 8 * 3 * 25 + 8 and rows["stem"].flops == _conv_flops(8, 10, 10, 3, 5, 5)
    assert rows["stem"].reason == "first convolution (kept by default)"
    assert rows["depthwise"].flops == _conv_flops(8, 10, 10, 1, 3, 3)
    assert rows["depthwise"].reason == "depthwise convolution (nothing to factorise)"
    assert rows["grouped"].params == 12 * 4 * 9 and rows["grouped"].flops == _conv_flops(12, 10, 10, 4, 3, 3)
    assert rows["grouped"].compressible and rows["grouped"].groups == 2
    assert rows["grouped"].dilation == [2, 2] and rows["grouped"].input == [8, 10, 10]
    assert rows["seq"].reason == "unsupported type Conv1d"
    assert rows["head"].flops == 2 * 400 * 7 and rows["head"].reason == "last linear layer (kept by default)"
    everything = {r.name: r for r in layer_table(model, (3, 20, 20), keep_first_last=False)}
    assert everything["stem"].compressible and everything["head"].compressible
    totals = summarise(model, list(rows.values()))
    assert totals["params_total"] == sum(p.numel() for p in model.parameters())
    assert totals["layers_compressible"] == 1 and totals["params_compressible"] == rows["grouped"].params


def test_a_wrong_input_size_is_a_data_error_naming_the_size():
    with pytest.raises(DataError, match=r"does not accept inputs of size \(3, 7, 7\)"):
        forward_probe(Zoo(), (3, 7, 7))
    assert forward_probe(Zoo(), (3, 20, 20)).shape == torch.Size([1, 7])
