"""The one place a report becomes files: report.json (the records as plain data) and report.md."""

from __future__ import annotations

import json
from pathlib import Path

from ..schema import to_data
from .markdown import render_markdown
from .model import RunReport

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def write_report(directory: Path, report: RunReport) -> None:
    (directory / REPORT_JSON).write_text(json.dumps(to_data(report), indent=2) + "\n")
    (directory / REPORT_MD).write_text(render_markdown(report))
