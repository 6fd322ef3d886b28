"""What evaluation reports: the original's and the compressed model's accuracy on the test data, and
each stage's record with the accuracy it left (the curve of the stages before distillation)."""

from __future__ import annotations

from dataclasses import dataclass

from .metrics import Metrics


@dataclass
class Accuracy:
    data: str | None = None
    samples: int | None = None
    original: Metrics | None = None
    compressed: Metrics | None = None
    layer_decomp_top1: float | None = None  # before distillation (the curve's first point when there is one)


@dataclass
class StageRecord:
    """A stage of the run, what it cost, and the accuracy it left (on the curve's test samples)."""

    stage: str
    seconds: float
    cpu_seconds: float
    top1: float | None = None
    samples: int | None = None
