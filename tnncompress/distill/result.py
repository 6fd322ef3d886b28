"""What a distillation run reports: its budget, each phase, the accuracy curve and the guard's events.

These records are the report's `distillation` section. A checkpoint carries them alongside (not as)
the training state, so that a resumed run reports the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..calibrate import CacheReport
from ..train import GuardEvent


@dataclass
class Budget:
    steps: int  # updates of the main phase(s)
    finetune_steps: int
    batch_size: int
    epochs: float  # the main budget as passes over the training set
    seconds: float | None = None  # the wall-clock budget the steps were derived from, when there was one
    phases: list[list] = field(default_factory=list)  # [kind, unit, steps] of each phase (as decided at its start)
    step_seconds: list[float] = field(default_factory=list)  # a wall-clock budget: each phase's timed pilot step
    seq_until: float | None = None  # ... and the second of the budget by which Seq-KD is to end


@dataclass
class CurvePoint:
    after: str  # "layer_decomp", a phase name, or "E2E-KD step N"
    updates: int  # gradient updates so far
    top1: float | None = None  # on `samples` test samples (none without test data, or off rank 0)
    samples: int | None = None


@dataclass
class PhaseRecord:
    phase: str
    kind: str  # "seq", "e2e" or "finetune"
    steps: int
    trained_params: int
    first_loss: float | None
    mean_loss: float
    interval_losses: list[float]
    seconds: float  # in training steps
    images_per_s: float
    lr_reductions: int
    wall_seconds: float  # the phase as a whole, evaluations and checkpoints included
    cpu_seconds: float = 0.0  # ... in CPU time of this process (all threads)
    planned_steps: int | None = None  # set when the budget's deadline stopped the phase before these
    unit: str | None = None  # Seq-KD: the unit, its layers and norms
    layers: list[str] | None = None
    norms: list[str] | None = None


@dataclass
class DistillResult:
    algorithm: str
    budget: Budget
    train: dict  # the training split, as ClassificationData.describe() gives it
    world_size: int
    device: str
    config: dict = field(default_factory=dict)  # the DistillConfig, as plain data
    updates: int = 0
    phases: list[PhaseRecord] = field(default_factory=list)
    curve: list[CurvePoint] = field(default_factory=list)
    events: list[GuardEvent] = field(default_factory=list)
    cache: CacheReport | None = None  # cached Seq-KD: the activation cache
    seconds: dict[str, float] = field(default_factory=dict)  # wall clock per part (budget.WallClock.breakdown)
    reverted: str | None = None  # --kd auto: why the student from before Seq-KD was restored (None: it was not)
