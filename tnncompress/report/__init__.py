"""The report stage: report.json, report.md and the latency measurements behind them."""

from .build import REPORT_SCHEMA, build_report, layer_rows
from .latency import measure_latency, slower_than_original
from .markdown import render_markdown

__all__ = ["REPORT_SCHEMA", "build_report", "layer_rows", "measure_latency", "render_markdown",
           "slower_than_original"]
