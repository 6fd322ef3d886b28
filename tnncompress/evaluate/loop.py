"""Evaluate a classifier on a dataset split."""

from __future__ import annotations

import torch
from torch import nn

from ..data import ClassificationData, iterate_batches
from ..errors import DataError, NumericalError
from ..inspect import forward_probe
from ..progress import progress_bar
from .metrics import ClassificationMetrics, Metrics


@torch.no_grad()
def evaluate(model: nn.Module, data: ClassificationData, batch_size: int = 256,
             device: str | torch.device = "cpu", limit: int | None = None,
             description: str = "evaluating") -> Metrics:
    """Top-1, top-5, NLL and ECE of `model` on (the first `limit` samples of) `data`."""
    model.eval().to(device)
    check_compatible(model, data)
    metrics = ClassificationMetrics()
    total = len(data) if limit is None else min(limit, len(data))
    with progress_bar(description, total=total) as advance:
        seen = 0
        for images, labels in iterate_batches(data, batch_size, limit=limit):
            logits = model(images.to(device))
            if not torch.isfinite(logits).all():
                raise NumericalError(f"the model's outputs are not finite (NaN or infinity) on samples {seen}-"
                                     f"{seen + labels.shape[0] - 1} of {data.source}")
            if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
                raise DataError(f"{data.source}: labels outside 0..{logits.shape[1] - 1} near sample {seen}")
            metrics.update(logits, labels)
            seen += labels.shape[0]
            advance(labels.shape[0])
    return metrics.result(synthetic=data.synthetic)


def output_classes(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Number of logits the model produces for one input of `input_size`."""
    logits = forward_probe(model, input_size)
    if logits.ndim != 2:
        raise DataError(f"the model returns an output of shape {tuple(logits.shape)}, not [batch, classes] logits")
    return int(logits.shape[1])


def check_compatible(model: nn.Module, data: ClassificationData) -> None:
    """Refuse data whose input shape or number of classes does not fit the model, before any work."""
    classes = output_classes(model, data.input_size)
    if classes != data.num_classes:
        raise DataError(f"the model has {classes} outputs but {data.source} has {data.num_classes} classes")
