"""Evaluation: accuracy, NLL and calibration of a classifier on a dataset."""

from .loop import check_compatible, evaluate, output_classes
from .metrics import ClassificationMetrics

__all__ = ["ClassificationMetrics", "check_compatible", "evaluate", "output_classes"]
