"""Learning rates (and SGD momentum) as functions of the step alone, so that a phase resumed at step s
continues exactly where it stopped, with no scheduler state to save.

"step": x0.1 at each `decay_at` fraction of the phase (the dissertation's schedule); "cosine": down to 0
over the phase; "onecycle": the one-cycle policy of the reference training (up from lr/25 over the first
`pct_start` of the steps, then down to lr/25e4, both by half cosines, momentum cycled the other way:
torch's OneCycleLR, tests/train compare the two step by step). A linear warm-up over `warmup_steps` and
the divergence guard's `scale` multiply any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("step", "cosine", "onecycle")
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4  # torch's OneCycleLR defaults: start at lr/25, end at start/1e4


@dataclass(frozen=True)
class Schedule:
    lr: float
    kind: str = "step"
    decay_at: tuple[float, ...] = (0.5, 0.75)
    warmup_steps: int = 0
    pct_start: float = 0.15  # onecycle: the share of the steps the learning rate rises
    momentum: tuple[float, float] | None = None  # onecycle: (lowest, highest) SGD momentum; None: left alone

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}: one of {', '.join(KINDS)}")

    def lr_at(self, step: int, steps: int, scale: float = 1.0) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "onecycle":
            return self._onecycle(step, steps, self.lr / ONECYCLE_DIV, self.lr,
                                  self.lr / ONECYCLE_DIV / ONECYCLE_FINAL_DIV) * scale * warm
        if self.kind == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))
        else:
            decay = 0.1 ** sum(step >= math.ceil(f * steps) for f in self.decay_at if 0 < f < 1)
        return self.lr * scale * warm * decay

    def momentum_at(self, step: int, steps: int) -> float | None:
        """SGD momentum of this step (onecycle with `momentum`), else None (the optimizer's own)."""
        if self.kind != "onecycle" or self.momentum is None:
            return None
        low, high = self.momentum
        return self._onecycle(step, steps, high, low, high)

    def _onecycle(self, step: int, steps: int, start: float, peak: float, end: float) -> float:
        """Half cosine from `start` to `peak` until step pct_start x steps - 1, then from `peak` to `end`
        at the last step (torch's arithmetic, in its order: the same floats)."""
        rise_end = float(self.pct_start * steps) - 1
        if step <= rise_end:
            return _cosine(start, peak, step / rise_end)
        return _cosine(peak, end, (step - rise_end) / (steps - 1 - rise_end))


def _cosine(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
