"""`tnncompress report`: write a run's report.md and report.html again from its report.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tnncompress.errors import UsageError
from tnncompress.report import read_report
from tnncompress.report.html import REPORT_HTML
from tnncompress.report.write import REPORT_JSON, write_pages

from .common import DebugOpt, QuietOpt, handle_errors, out

EXAMPLES = """Examples:

  tnncompress report resnet32-mcp-0.1/        # after `pip install 'tnncompress[report]'`: the plots

Prints the path of report.html; opens nothing.
"""


@handle_errors
def report(
    directory: Annotated[Path, typer.Argument(help="A `tnncompress run` output directory.", metavar="DIR")],
    quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Rewrite DIR/report.md and DIR/report.html from DIR/report.json (e.g. once matplotlib is installed)."""
    if not (directory / REPORT_JSON).is_file():
        raise UsageError(f"{directory}: no {REPORT_JSON} (not a tnncompress run output directory)")
    write_pages(directory, read_report(directory / REPORT_JSON))
    if not quiet:
        out.print(str(directory / REPORT_HTML))
