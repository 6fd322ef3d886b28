"""Global rank allocation: the greedy knapsack keeps the budget, respects floors and caps, and buys
rank where damage falls fastest; a layer made more sensitive gets more."""

from __future__ import annotations

import pytest
import torch

from tnncompress.compress import Candidate, greedy_allocate
from tnncompress.errors import UsageError


def _curve(weight: float, costs=(10, 20, 40, 80, 160), dense: int | None = 400) -> list[Candidate]:
    """Damage weight * e^2 with e halving at every doubling of cost; the cap is the dense layer."""
    out = [Candidate(c, weight * (0.5 ** i) ** 2, {"r": c}, 0.5 ** i) for i, c in enumerate(costs)]
    return out + ([Candidate(dense, 0.0, None)] if dense else [])


def test_the_budget_is_kept_and_floors_hold():
    curves = {f"l{i}": _curve(1.0) for i in range(5)}
    for budget in (50, 73, 150, 400, 1000):
        chosen = greedy_allocate(curves, budget)
        assert sum(curves[k][j].cost for k, j in chosen.items()) <= budget
        assert all(j >= 0 for j in chosen.values())
    with pytest.raises(UsageError, match="smallest ranks of the selected layers need 50 parameters"):
        greedy_allocate(curves, 49)


def test_a_more_sensitive_layer_gets_more_rank():
    curves = {"calm": _curve(1.0), "touchy": _curve(50.0), "other": _curve(1.0)}
    chosen = greedy_allocate(curves, 150)
    assert curves["touchy"][chosen["touchy"]].cost > curves["calm"][chosen["calm"]].cost
    assert abs(chosen["calm"] - chosen["other"]) <= 1  # equal layers alike, up to the last step the budget allows


def test_caps_are_respected_and_dense_is_chosen_when_it_pays():
    curves = {"capped": _curve(100.0, dense=None), "free": _curve(100.0)}
    chosen = greedy_allocate(curves, 10_000)  # money no object: each layer goes to its cap
    assert chosen["capped"] == len(curves["capped"]) - 1 and curves["free"][chosen["free"]].ranks is None


def test_greedy_matches_brute_force_on_small_convex_problems():
    import itertools

    curves = {"a": _curve(3.0), "b": _curve(1.0), "c": _curve(7.0)}
    for budget in (60, 100, 170, 260, 500):
        chosen = greedy_allocate(curves, budget)
        got = sum(curves[k][j].damage for k, j in chosen.items())
        best = min(sum(curves[k][j].damage for k, j in zip(curves, choice, strict=True))
                   for choice in itertools.product(*(range(len(c)) for c in curves.values()))
                   if sum(curves[k][j].cost for k, j in zip(curves, choice, strict=True)) <= budget)
        assert got <= best * 1.6 + 1e-12  # greedy on convex curves: within a rounding step of the optimum


@pytest.mark.slow
class TwoBranches(torch.nn.Module):
    """Two identical linear layers side by side; the logits weigh branch a by `scale`. Scaling a layer
    that every path goes through (the classifier) would amplify every layer's damage alike."""

    def __init__(self, scale: float):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(784, 64), torch.nn.Linear(784, 64)
        self.b.load_state_dict(self.a.state_dict())
        self.head = torch.nn.Linear(64, 10)  # the last layer stays dense by default
        self.scale = scale

    def forward(self, x):
        x = x.flatten(1)
        return self.head(self.scale * self.a(x) + self.b(x))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [30.0, 1 / 30])
def test_a_layer_made_more_sensitive_on_purpose_gets_more_of_the_budget(scale):
    """The two branches make the same output errors at every rank; only their measured sensitivity
    differs, so the one the logits weigh more must get more of the budget."""
    from tnncompress.calibrate import calibration_pool
    from tnncompress.compress import CompressConfig, global_plans, select_layers
    from tnncompress.data import BUNDLED_FASHION_MNIST, load_data

    model = TwoBranches(scale).eval()
    pool = calibration_pool(load_data(f"mnist-idx:{BUNDLED_FASHION_MNIST}", "train"), 256)
    config = CompressConfig(format="cp", rate=0.1, allocate="global")
    plans = {p.name: p for p in global_plans(model, select_layers(model, (1, 28, 28)), config, pool, (1, 28, 28),
                                              probe=256)}
    share = {name: plans[name].params_compressed if plans[name].ranks else plans[name].params_original
             for name in "ab"}
    assert (share["a"] > share["b"]) if scale > 1 else (share["a"] < share["b"]), share
