"""The one place a report becomes files: report.json (the records as plain data), report.md and report.html,
each written atomically and never through a link (io.write_atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import write_text
from ..schema import to_data
from .html import REPORT_HTML, report_html
from .markdown import render_markdown
from .model import RunReport

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def write_report(directory: Path, report: RunReport) -> None:
    write_text(directory / REPORT_JSON, json.dumps(to_data(report), indent=2) + "\n")
    write_pages(directory, report)


def write_pages(directory: Path, report: RunReport) -> None:
    """report.md and report.html, which are made from report.json's records alone."""
    write_text(directory / REPORT_MD, render_markdown(report))
    write_text(directory / REPORT_HTML, report_html(report))
