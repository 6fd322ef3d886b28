"""A distillation's wall clock: where its time went, and how many steps fit in what is left of a budget.

`--kd-budget 4m` means that distillation ends within 4 minutes plus its last evaluation. Everything it
does counts: timing the pilot steps, filling the activation cache, computing a unit's inputs, the
evaluations of the accuracy curve and the checkpoints. So each phase's steps are decided when the phase
starts, from the time left then (a Seq-KD unit: its share of what is left of Seq-KD's part; the last phase:
all that is left, less the evaluations its checkpoints will make), and a phase that still runs at the
deadline stops there. The decided steps are recorded with the run, so a resumed run keeps them.
"""

from __future__ import annotations

import contextlib
import time

from .config import DistillConfig
from .result import Budget

PARTS = ("pilots", "cache", "unit_inputs", "training", "evaluations", "checkpoints")


class WallClock:
    """Seconds per part (nested parts are not counted twice) and the budget left. `spent` continues a
    resumed run's record."""

    def __init__(self, budget: float | None, spent: dict[str, float] | None = None):
        self.budget = budget
        self.spent = {part: 0.0 for part in PARTS} | dict(spent or {})
        self.counts: dict[str, int] = {}
        self._before = self.spent.pop("total", 0.0)  # a resumed run's wall clock before this process
        self.spent.pop("other", None)  # recomputed from the total
        self._started = time.perf_counter()
        self._open: list[float] = []  # time taken by parts nested in each open part

    @contextlib.contextmanager
    def part(self, name: str):
        started = time.perf_counter()
        self._open.append(0.0)
        try:
            yield
        finally:
            took = time.perf_counter() - started
            nested = self._open.pop()
            self.spent[name] = self.spent.get(name, 0.0) + took - nested
            self.counts[name] = self.counts.get(name, 0) + 1
            if self._open:
                self._open[-1] += took

    def elapsed(self) -> float:
        return self._before + time.perf_counter() - self._started

    def left(self) -> float | None:
        return None if self.budget is None else self.budget - self.elapsed()

    def deadline(self) -> float | None:
        """The budget's end as a time.perf_counter() value."""
        return None if self.budget is None else time.perf_counter() + self.left()

    def mean(self, part: str) -> float | None:
        """Mean seconds of one `part` so far in this process (None before the first)."""
        n = self.counts.get(part, 0)
        return self.spent[part] / n if n else None

    def breakdown(self) -> dict[str, float]:
        """Seconds per part, "other" (setup, the guard's restores, progress) and "total"."""
        total = self.elapsed()
        parts = {k: round(v, 3) for k, v in self.spent.items()}
        return parts | {"other": round(max(total - sum(self.spent.values()), 0.0), 3), "total": round(total, 3)}


def steps_that_fit(seconds: float, step_seconds: float, evaluation_seconds: float = 0.0,
                   steps_per_evaluation: int | None = None) -> int:
    """Steps of `step_seconds` that fit in `seconds` with an evaluation of `evaluation_seconds` every
    `steps_per_evaluation` steps; at least one."""
    per_step = step_seconds + (evaluation_seconds / steps_per_evaluation if steps_per_evaluation else 0.0)
    return max(1, int(seconds / max(per_step, 1e-9)))


def seq_share(config: DistillConfig) -> float:
    """The share of a wall-clock budget that Seq-KD's units get."""
    return config.seq_share if config.algorithm == "auto" else (1.0 if config.algorithm == "seq" else 0.0)


def seq_until(clock: WallClock, config: DistillConfig, specs: list) -> float | None:
    """The second of the budget by which Seq-KD is to end: its share of what the cache and pilots left."""
    if clock.budget is None or not any(kind == "seq" for kind, _, _ in specs):
        return None
    return clock.elapsed() + seq_share(config) * max(clock.left(), 0.0)


def deadline_of(index: int, specs: list, budget: Budget, clock: WallClock) -> float | None:
    """When phase `index` must stop (a time.perf_counter() value): a Seq-KD unit at the end of its share of
    what is left of Seq-KD's part, the others at the end of the budget."""
    if clock.budget is None:
        return None
    if specs[index][0] == "seq" and budget.seq_until is not None:
        units_left = sum(k == "seq" for k, _, _ in specs[index:])
        return time.perf_counter() + max(budget.seq_until - clock.elapsed(), 0.0) / units_left
    return clock.deadline()


def steps_left(index: int, specs: list, budget: Budget, clock: WallClock, config: DistillConfig,
                train_samples: int) -> int:
    """Phase `index`'s steps as it starts, from the wall-clock budget left: a Seq-KD unit gets an even
    share of what is left of Seq-KD's part; the phase after them (or E2E-KD alone) all that is left, less
    the evaluations its checkpoints will make (as long as the last one took, or a third of a step per
    batch of test samples before any)."""
    kind, step = specs[index][0], budget.step_seconds[index]
    if kind == "seq":
        units_left = sum(k == "seq" for k, _, _ in specs[index:])
        return steps_that_fit((budget.seq_until - clock.elapsed()) / units_left, step)
    every = config.checkpoint_every or config.steps_per_epoch(train_samples)
    evaluation = clock.mean("evaluations") or step / 3 * (config.eval_limit or 10_000) / config.batch_size
    return steps_that_fit(clock.left(), step, evaluation + (clock.mean("checkpoints") or 0.0), every)
