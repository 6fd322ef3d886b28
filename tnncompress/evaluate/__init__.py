"""The evaluation stage: accuracy, NLL and calibration of a classifier on a dataset."""

from .config import EvaluateConfig
from .loop import check_compatible, evaluate, output_classes
from .metrics import ClassificationMetrics, Metrics

__all__ = ["ClassificationMetrics", "EvaluateConfig", "Metrics", "check_compatible", "evaluate", "output_classes"]
