"""`--rate-by flops`: each layer's ranks spend its FLOP budget (per sample, by conv_einsum's plan) and
stay within it, checked rank by rank against the formats' own FLOP counts."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tnncompress.compress import plan_layer, select_layers
from tnncompress.compress.ranks import _geometry, _input_hw
from tnncompress.formats import get_format

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.mark.parametrize("fmt", ["cp", "tk", "tt", "mcp", "mtt"])
def test_the_flop_target_is_filled_and_kept(resnet18, fmt):
    rate = 0.25
    format_ = get_format(fmt)
    choices = [c for c in select_layers(resnet18, SIZE) if c.status == "compress"]
    plans = [plan_layer(resnet18.get_submodule(c.info.name), c.info, fmt, rate, "flops") for c in choices]
    done = [(c, p) for c, p in zip(choices, plans, strict=True) if p.ranks is not None]
    assert len(done) >= len(plans) - 2  # at most a layer or two cannot reach 25% even at rank 1
    for choice, plan in done:
        module = resnet18.get_submodule(plan.name)
        budget = int(rate * plan.flops_original)

        def flops(ranks, module=module, plan=plan, choice=choice):
            return format_.flops(plan.shape, plan.tensorization, ranks, _input_hw(choice.info), **_geometry(module))

        assert flops(plan.ranks) == plan.flops_compressed <= budget
        for name, r in plan.ranks.items():  # maximal: no single rank can grow by one within the budget
            trial = {**plan.ranks, name: r + 1}
            if format_.effective_ranks(plan.shape, plan.tensorization, trial) == trial:
                assert flops(trial) > budget, (plan.name, name, r)
    total_before = sum(p.flops_original for _, p in done)
    total_after = sum(p.flops_compressed for _, p in done)
    assert 0.9 * rate * total_before <= total_after <= rate * total_before
