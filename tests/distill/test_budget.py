"""The wall-clock budget is the budget: every part of distillation counts against it, each phase's
steps come from the time left when it starts, and a phase still running at the deadline stops there."""

from __future__ import annotations

import importlib
import time

import pytest
import torch
from torch import nn

from tnncompress.calibrate import calibration_pool
from tnncompress.distill import Budget, Context, DistillConfig, KdData, distil
from tnncompress.distill.budget import PARTS, WallClock, steps_left, steps_that_fit
from tnncompress.train import Callbacks, Phase, PhaseState, train_phase

from .conftest import teacher_and_student

phases_module = importlib.import_module("tnncompress.distill.phases")


def test_nested_parts_are_counted_once_and_the_parts_add_up_to_the_total():
    clock = WallClock(10.0)
    with clock.part("training"):
        time.sleep(0.02)
        with clock.part("evaluations"):
            time.sleep(0.03)
    b = clock.breakdown()
    assert 0.02 <= b["training"] < 0.03 + 0.02 and b["evaluations"] >= 0.03
    assert sum(v for k, v in b.items() if k != "total") == pytest.approx(b["total"], abs=2e-3)
    assert set(PARTS) <= b.keys() and clock.mean("evaluations") == pytest.approx(b["evaluations"], abs=1e-3)
    assert clock.left() == pytest.approx(10.0 - clock.elapsed(), abs=1e-3)


def test_a_resumed_clock_continues_the_record_and_what_is_left():
    before = {**{p: 1.0 for p in PARTS}, "other": 2.0, "total": 8.0}
    clock = WallClock(20.0, before)
    assert clock.elapsed() == pytest.approx(8.0, abs=0.05)
    assert clock.left() == pytest.approx(12.0, abs=0.05)
    b = clock.breakdown()
    assert b["training"] == 1.0 and b["other"] == pytest.approx(2.0, abs=0.05)  # not counted twice
    assert WallClock(None).left() is None and WallClock(None).deadline() is None


def test_steps_that_fit_leave_room_for_the_evaluations():
    assert steps_that_fit(10.0, 0.1) == 100
    assert steps_that_fit(10.0, 0.1, evaluation_seconds=1.0, steps_per_evaluation=10) == 50  # 0.2 s a step
    assert steps_that_fit(-3.0, 0.1) == 1 and steps_that_fit(0.05, 0.1) == 1  # a phase takes a step at least


class _Clock:
    def __init__(self, elapsed, left, evaluation=None):
        self._elapsed, self._left, self._evaluation = elapsed, left, evaluation

    def elapsed(self):
        return self._elapsed

    def left(self):
        return self._left

    def mean(self, part):
        return self._evaluation if part == "evaluations" else None


def test_each_phase_gets_its_steps_from_the_time_left_as_it_starts():
    specs = [("seq", None, 5), ("seq", None, 5), ("finetune", None, 50)]
    budget = Budget(0, 0, 32, 0.0, 100.0, [list(s) for s in specs], [0.1, 0.2, 0.5], seq_until=30.0)
    config = DistillConfig(algorithm="auto", batch_size=32, checkpoint_every=20, eval_limit=200)
    # the first unit: half of the 20 s left of Seq-KD's part; the second: all of what is left of it
    assert steps_left(0, specs, budget, _Clock(10.0, 90.0), config, 1000) == 100
    assert steps_left(1, specs, budget, _Clock(26.0, 74.0), config, 1000) == 20
    # the last phase: all that is left, with an evaluation of 2 s every 20 steps (0.6 s a step)
    assert steps_left(2, specs, budget, _Clock(40.0, 60.0, 2.0), config, 1000) == 100
    # late: the unit still takes one step; the deadline stops what overruns
    assert steps_left(1, specs, budget, _Clock(35.0, 65.0), config, 1000) == 1


class _Stream:
    steps_per_epoch = 1000

    def batch(self, _phase, step):
        g = torch.Generator().manual_seed(step)
        return torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)


def _phase(steps):
    model = nn.Linear(4, 2)
    return Phase(0, "E2E-KD", "e2e", steps, model, list(model.parameters()),
                 lambda x, y: nn.functional.mse_loss(model(x), y), stream=_Stream())


def test_a_phase_stops_at_the_deadline_after_at_least_one_step():
    config = DistillConfig(algorithm="e2e", steps=50)
    saved = []
    state = train_phase(_phase(50), config.loop(), Context(), PhaseState(), Callbacks(checkpoint=saved.append),
                        deadline=time.perf_counter())
    assert state.out_of_time and state.step == 1 and saved == []
    state = train_phase(_phase(50), config.loop(), Context(), PhaseState(), Callbacks(checkpoint=saved.append),
                        deadline=time.perf_counter() + 600)
    assert not state.out_of_time and state.step == 50


@pytest.mark.slow
def test_a_run_whose_pilots_misjudge_the_steps_still_ends_at_its_budget(bundled_data, monkeypatch):
    """The pilot steps claim to take 0.1 ms: planned from them alone, the phases would run for minutes.
    Decided from the time left and stopped at the deadline, distillation ends within its 4 s budget
    plus its last evaluation (and the one step and checkpoint under way at the deadline)."""
    train, test = bundled_data
    teacher, student = teacher_and_student("mcp", 0.2)
    monkeypatch.setattr(phases_module, "_step_seconds", lambda *a, **k: 1e-4)
    config = DistillConfig(algorithm="auto", budget="4s", seq_share=0.5, eval_limit=200, plan="optimal")
    started = time.perf_counter()
    result = distil(teacher, student, KdData(train, test, (1, 28, 28), calibration_pool(train, 256)), config, Context())
    wall = time.perf_counter() - started
    seconds = result.seconds
    assert seconds["total"] == pytest.approx(wall, abs=0.5)
    assert sum(v for k, v in seconds.items() if k != "total") == pytest.approx(seconds["total"], abs=0.05)
    last_evaluation = seconds["evaluations"] / max(sum(1 for p in result.curve if p.top1 is not None), 1)
    assert seconds["total"] <= 4.0 + last_evaluation + 1.5, seconds
    assert seconds["cache"] > 0 and seconds["training"] > 0 and seconds["unit_inputs"] > 0
    stopped = [p for p in result.phases if p.planned_steps is not None]
    assert stopped and all(p.steps < p.planned_steps for p in stopped)
    assert [p.steps for p in result.phases] == [n for _, _, n in result.budget.phases]
    assert result.phases[-1].kind == "finetune" and result.phases[-1].steps > 1  # Seq-KD left it its share
