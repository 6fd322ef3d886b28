"""A batch's results as files for people and for CI: summary.json (everything), summary.md (a GitHub job
summary), junit.xml (one test case per run: CI systems show pass/fail per model) and summary.html."""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import __version__
from ..report.html import summary_html
from ..schema import to_data
from .runner import Outcome

SUMMARY_JSON, SUMMARY_MD, JUNIT_XML, SUMMARY_HTML = "summary.json", "summary.md", "junit.xml", "summary.html"
SUMMARY_SCHEMA = 1


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {"total": len(outcomes), "passed": sum(o.status == "passed" for o in outcomes),
            "failed": sum(o.status == "failed" for o in outcomes), "errors": sum(o.status == "error" for o in outcomes),
            "reused": sum(o.reused for o in outcomes), "resumed": sum(o.resumed for o in outcomes)}


def write_summary(directory: Path, outcomes: list[Outcome], command: str, not_run: list[str] = ()) -> list[Path]:
    """Write the four files into `directory` (each atomically); their paths."""
    doc = {"schema": SUMMARY_SCHEMA, "tnncompress_version": __version__, "command": command,
           **counts(outcomes), "not_run": list(not_run), "runs": to_data(outcomes)}
    files = {SUMMARY_JSON: json.dumps(doc, indent=2) + "\n", SUMMARY_MD: markdown(outcomes, command, not_run),
             JUNIT_XML: junit(outcomes), SUMMARY_HTML: summary_html(outcomes, doc, directory)}
    written = []
    for name, text in files.items():
        written.append(_write_atomically(directory / name, text))
    return written


def _write_atomically(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


STATUS_MARK = {"passed": "✅ passed", "failed": "❌ gate missed", "error": "💥 error"}


def markdown(outcomes: list[Outcome], command: str, not_run: list[str] = ()) -> str:
    c = counts(outcomes)
    lines = ["# tnncompress batch", "",
             f"{c['total']} runs: {c['passed']} passed, {c['failed']} missed a gate, {c['errors']} errors"
             f" ({c['reused']} reused from an earlier batch, {c['resumed']} resumed).", "",
             f"`{command}`", "",
             "| run | status | format | rate | top-1 original | top-1 | drop (points) | ONNX error | seconds |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for o in outcomes:
        m = o.metrics
        drop = (f"{100 * (m['top1_original'] - m['top1']):.2f}" if m.get("top1") is not None
                and m.get("top1_original") is not None else "-")
        status = STATUS_MARK[o.status] + (" (reused)" if o.reused else "") + (" (resumed)" if o.resumed else "")
        lines.append(f"| {o.name} | {status} | {m.get('format', '-')} | {_num(m.get('rate'))} | "
                     f"{_pct(m.get('top1_original'))} | {_pct(m.get('top1'))} | {drop} | "
                     f"{_num(m.get('onnx_error'), '.2g')} | {o.seconds:.1f} |")
    gated = [o for o in outcomes if o.gates]
    if gated:
        lines += ["", "## Gates", "", "| run | gate | measured | limit | result |", "|---|---|---:|---:|---|"]
        for o in gated:
            for g in o.gates:
                lines.append(f"| {o.name} | {g.name} | {g.measured_text} | {g.relation} {g.limit:g} | "
                             f"{'passed' if g.passed else '**missed**'} |")
    problems = [o for o in outcomes if o.message]
    if problems:
        lines += ["", "## Failures", ""] + [f"- **{o.name}** ({o.source}): {_md_escape(o.message)}" for o in problems]
    if not_run:
        lines += ["", f"Not run (--fail-fast stopped the batch): {', '.join(not_run)}."]
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def junit(outcomes: list[Outcome]) -> str:
    """JUnit XML: a `failure` for a missed gate, an `error` for a run that did not complete."""
    c = counts(outcomes)
    suites = ET.Element("testsuites", name="tnncompress batch", tests=str(c["total"]), failures=str(c["failed"]),
                        errors=str(c["errors"]), time=f"{sum(o.seconds for o in outcomes):.3f}")
    suite = ET.SubElement(suites, "testsuite", name="tnncompress batch", tests=str(c["total"]),
                          failures=str(c["failed"]), errors=str(c["errors"]), skipped="0",
                          time=f"{sum(o.seconds for o in outcomes):.3f}")
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"tnncompress.batch.{Path(o.source).stem}", name=o.name,
                             time=f"{o.seconds:.3f}", file=o.source)
        if o.status == "failed":
            ET.SubElement(case, "failure", message=o.message or "", type="gate").text = \
                "\n".join(g.describe() for g in o.gates)
        elif o.status == "error":
            ET.SubElement(case, "error", message=o.message or "", type="run").text = o.detail or o.message
        out = [f"output: {o.directory}"] + [g.describe() for g in o.gates]
        if o.reused:
            out.append("reused: completed by an earlier batch with the same recipe")
        ET.SubElement(case, "system-out").text = "\n".join(out)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
