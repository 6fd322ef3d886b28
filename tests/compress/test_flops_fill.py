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


@pytest.mark.parametrize("fmt,rate_by", [("tk", "flops"), ("cp", "params"), ("tt", "flops")])
def test_rank_multiple_gives_multiples_within_the_budget_and_maximal(resnet18, fmt, rate_by):
    rate, multiple = 0.25, 8
    format_ = get_format(fmt)
    choices = [c for c in select_layers(resnet18, SIZE) if c.status == "compress"]
    for c in choices:
        module = resnet18.get_submodule(c.info.name)
        free = plan_layer(module, c.info, fmt, rate, rate_by)
        plan = plan_layer(module, c.info, fmt, rate, rate_by, multiple=multiple)
        if plan.ranks is None:
            continue
        shape, tz = plan.shape, plan.tensorization

        def cost(ranks, module=module, c=c, shape=shape, tz=tz):
            if rate_by == "params":
                return format_.params(shape, tz, ranks) + (module.bias.numel() if module.bias is not None else 0)
            return format_.flops(shape, tz, ranks, _input_hw(c.info), **_geometry(module))

        budget = int(rate * (c.info.params if rate_by == "params" else c.info.flops))
        assert cost(plan.ranks) <= budget
        # every rank is a multiple, or is below the multiple where the free rule's rank was too
        for name, r in plan.ranks.items():
            assert r % multiple == 0 or (r < multiple and free.ranks[name] < multiple) \
                or format_.effective_ranks(shape, tz, plan.ranks)[name] == r, (c.info.name, name, r)
        for name, r in plan.ranks.items():  # maximal: no rank can reach its next multiple within the budget
            trial = {**plan.ranks, name: (r // multiple + 1) * multiple}
            if format_.effective_ranks(shape, tz, trial) == trial:
                assert cost(trial) > budget, (c.info.name, name, r)
