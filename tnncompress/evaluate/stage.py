"""The evaluation stage: the original and the compressed model on the test data, and the accuracy a
stage leaves (the curve of the stages before distillation). Told by its options section
(`EvaluateConfig`); returns its records."""

from __future__ import annotations

import logging

from torch import nn

from ..data import ClassificationData
from ..formats import planned
from .config import EvaluateConfig
from .loop import evaluate
from .result import Accuracy, StageRecord

log = logging.getLogger(__name__)


def accuracy(e: EvaluateConfig, original: nn.Module, student: nn.Module, test: ClassificationData | None,
             device: str, layer_decomp_top1: float | None) -> Accuracy:
    if test is None:
        return Accuracy()
    with planned(student, e.plan):
        metrics = {name: evaluate(model, test, batch_size=e.batch_size, device=device, limit=e.limit,
                                  description=f"evaluating ({name})")
                   for name, model in (("original", original), ("compressed", student))}
    original.cpu(), student.cpu()
    log.info("top-1 on %d test samples: original %.2f%%, compressed %.2f%%", metrics["original"].samples,
             100 * metrics["original"].top1, 100 * metrics["compressed"].top1)
    return Accuracy(data=test.source, samples=metrics["original"].samples, original=metrics["original"],
                    compressed=metrics["compressed"], layer_decomp_top1=layer_decomp_top1)


def point(record: StageRecord, model: nn.Module, test: ClassificationData | None, plan: str, limit: int | None,
          device: str) -> StageRecord:
    """`record` (a stage and its seconds) with the accuracy the stage leaves, on the curve's test samples."""
    if test is not None:
        with planned(model, plan):
            metrics = evaluate(model, test, device=device, limit=limit)
        record.top1, record.samples = metrics.top1, metrics.samples
        log.info("top-1 after %s: %.2f%% (%d test samples)", record.stage, 100 * metrics.top1, metrics.samples)
    return record
