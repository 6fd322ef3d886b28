"""--deploy-target: every layer's ranks rounded to the multiple (8 or 16) whose whole model the target
runtime measures fastest (issue 26, item 3). The decision's logic, with the timer injected (speed itself
is benchmarked, not tested: RESULTS.md, "Ranks for one runtime")."""

from __future__ import annotations

import torch
from torch import nn

from tnncompress.compress import select_layers
from tnncompress.compress.config import CompressConfig
from tnncompress.compress.plan import plan_model
from tnncompress.compress.speed import speed_ranks
from tnncompress.formats import TensorizedLayer

INPUT = (3, 8, 8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.a = nn.Conv2d(64, 64, 3, padding=1)
        self.b = nn.Conv2d(64, 64, 3, padding=1, stride=2)
        self.c = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.c(self.b(self.a(self.stem(x)))).mean((2, 3)))


def _setup():
    torch.manual_seed(0)
    model = Net().eval()
    choices = select_layers(model, INPUT)
    plans = plan_model(model, choices, CompressConfig(format="cp", rate=0.1))
    return model, {c.info.name: c.info for c in choices}, plans


def fake_timer(ms_by_multiple: dict[int, float], dense_ms: float = 1.0, seen: list | None = None):
    """A model whose chains' ranks are all multiples of 16 takes ms_by_multiple[16], of 8 ms_by_multiple[8],
    anything else ms_by_multiple[1]; the dense model dense_ms."""
    def timer(models, input_size, batches, runtime):
        assert runtime == "onnxruntime" and input_size == INPUT
        out = {}
        for name, model in models.items():
            ranks = [r for m in model.modules() if isinstance(m, TensorizedLayer) for r in m.ranks.values()]
            assert (name == "dense") == (not ranks)  # the original, or a model of chains
            if seen is not None:
                seen.append(name)
            if name == "dense":
                ms = dense_ms
            else:
                ms = next(ms_by_multiple[k] for k in (16, 8, 1) if all(r % k == 0 for r in ranks))
            out[name] = {str(b): ms for b in batches}
        return out
    return timer


def _run(timer, target="onnxruntime-cpu"):
    model, infos, plans = _setup()
    return plans, speed_ranks(model, plans, infos, 0.1, "params", 3, target, INPUT, [1, 32], timer)


def test_the_rounded_model_that_wins_by_the_margin_and_keeps_most_parameters_is_taken():
    # both multiples win by the margin, 16 the faster: 8 keeps more parameters, so 8 is taken
    plans, out = _run(fake_timer({1: 0.9, 8: 0.55, 16: 0.5}))
    assert all(p.ranks["r"] % 8 == 0 for p in out)
    assert sum(p.params_compressed for p in out) < sum(p.params_compressed for p in plans)
    assert any(p.ranks["r"] % 16 for p in out)  # multiples of 8, not of 16
    for before, after in zip(plans, out, strict=True):
        if after.ranks != before.ranks:
            assert after.params_compressed < before.params_compressed
            assert "rounded to multiples of 8 for onnxruntime-cpu" in after.reason
            assert "parameters given back here" in after.reason
    # only 16 wins by the margin: 16
    _, out = _run(fake_timer({1: 0.9, 8: 0.85, 16: 0.5}))
    assert all(p.ranks["r"] % 16 == 0 for p in out)


def test_the_rate_ranks_are_kept_unless_a_rounded_model_wins_by_the_margin():
    plans, out = _run(fake_timer({1: 0.9, 8: 0.85, 16: 0.85}))  # under 10% faster
    assert out == plans
    plans, out = _run(fake_timer({1: 0.9, 8: 0.5, 16: 0.5}, dense_ms=0.4))  # dense is faster still
    assert out == plans
    seen = []
    plans, out = _run(fake_timer({1: 0.9, 8: 0.5, 16: 0.5}, seen=seen), target="size")  # nothing timed
    assert out == plans and seen == []


def test_the_timed_models_are_the_variants_and_the_original():
    seen = []
    _run(fake_timer({1: 0.9, 8: 0.5, 16: 0.5}, seen=seen))
    assert sorted(seen) == ["dense", "rate", "x16", "x8"]
