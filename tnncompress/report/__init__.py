"""The report stage: the run's results as one typed document, written as report.json and report.md, and
the latency measurements behind it."""

from .build import build_report, layer_rows
from .config import ReportConfig
from .latency import RUNTIMES, Latency, LatencyEntry, measure_latency
from .markdown import render_markdown
from .model import (
                    REPORT_SCHEMA,
                    Accuracy,
                    Flops,
                    LayerRow,
                    OnnxReport,
                    Params,
                    RunReport,
                    Sizes,
                    StageRecord,
                    read_report,
)
from .write import write_report

__all__ = ["REPORT_SCHEMA", "RUNTIMES", "Accuracy", "Flops", "Latency", "LatencyEntry", "LayerRow", "OnnxReport",
           "Params", "ReportConfig", "RunReport", "Sizes", "StageRecord", "build_report", "layer_rows",
           "measure_latency", "read_report", "render_markdown", "write_report"]
