"""A batch's results as files for people and for CI: summary.json (everything), summary.md (a GitHub job
summary), junit.xml (one test case per run: CI systems show pass/fail per model) and summary.html.

The files are true at every moment a CI could read them: written when the batch starts (every run
"pending", the batch "running"), again after each run, and once more at every exit: "finished", or
"interrupted" (a signal, an error of the batch itself). A run that has not completed is never shown
as passed: in junit.xml it is an error ("not run") until it has run. Strings from files (run names,
recipe paths, error messages) are escaped for each medium (tnncompress.escape).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..escape import markdown as md
from ..escape import xml
from ..io import write_text
from ..report.html import summary_html
from ..schema import to_data
from .jobs import Job
from .runner import Outcome

SUMMARY_JSON, SUMMARY_MD, JUNIT_XML, SUMMARY_HTML = "summary.json", "summary.md", "junit.xml", "summary.html"
SUMMARY_FILES = (SUMMARY_JSON, SUMMARY_MD, JUNIT_XML, SUMMARY_HTML)
SUMMARY_SCHEMA = 2  # 2: `state`; `not_run` lists the runs not done yet while running
STATES = ("running", "finished", "interrupted")
PENDING_WHY = {"running": "not run yet: the batch is running (or was killed)",
               "finished": "not run: --fail-fast stopped the batch",
               "interrupted": "not run: the batch was interrupted"}


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    return {"total": len(outcomes), "passed": sum(o.status == "passed" for o in outcomes),
            "failed": sum(o.status == "failed" for o in outcomes), "errors": sum(o.status == "error" for o in outcomes),
            "reused": sum(o.reused for o in outcomes), "resumed": sum(o.resumed for o in outcomes)}


def write_summary(directory: Path, outcomes: list[Outcome], command: str, pending: list[Job] = (),
                  state: str = "finished") -> list[Path]:
    """Write the four files into `directory` (each atomically, never through a link); their paths.
    `pending`: the jobs not run (yet, or at all: see `state`)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    pending = list(pending)
    doc = {"schema": SUMMARY_SCHEMA, "tnncompress_version": __version__, "command": command, "state": state,
           **counts(outcomes), "not_run": [j.name for j in pending], "runs": to_data(outcomes)}
    files = {SUMMARY_JSON: json.dumps(doc, indent=2) + "\n", SUMMARY_MD: markdown(outcomes, command, pending, state),
             JUNIT_XML: junit(outcomes, pending, state), SUMMARY_HTML: summary_html(outcomes, doc, directory)}
    return [write_text(directory / name, text) for name, text in files.items()]


def summary_writer(directory: Path, jobs: list[Job], command: str) -> Callable[[list[Outcome], str], None]:
    """What `run_batch` calls to keep the summaries true: (outcomes so far, state) -> the files rewritten,
    every job without an outcome pending."""
    def record(outcomes: list[Outcome], state: str) -> None:
        done = {o.name for o in outcomes}
        write_summary(directory, outcomes, command, [j for j in jobs if j.name not in done], state)
    return record


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


STATUS_MARK = {"passed": "✅ passed", "failed": "❌ gate missed", "error": "💥 error"}
HEADLINE = {"running": "**Running**: {done} of {total} runs done so far",
            "finished": "{done} runs", "interrupted": "**Interrupted** after {done} of {total} runs"}


def markdown(outcomes: list[Outcome], command: str, pending: list[Job] = (), state: str = "finished") -> str:
    c = counts(outcomes)
    headline = HEADLINE[state].format(done=c["total"], total=c["total"] + len(pending))
    lines = ["# tnncompress batch", "",
             f"{headline}: {c['passed']} passed, {c['failed']} missed a gate, {c['errors']} errors"
             f" ({c['reused']} reused from an earlier batch, {c['resumed']} resumed).", "",
             md(command, table=False), "",
             "| run | status | format | rate | top-1 original | top-1 | drop (points) | ONNX error | seconds |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for o in outcomes:
        m = o.metrics
        drop = (f"{100 * (m.top1_original - m.top1):.2f}" if m.top1 is not None
                and m.top1_original is not None else "-")
        status = STATUS_MARK[o.status] + (" (reused)" if o.reused else "") + (" (resumed)" if o.resumed else "")
        lines.append(f"| {md(o.name)} | {status} | {md(m.format or '-')} | {_num(m.rate)} | "
                     f"{_pct(m.top1_original)} | {_pct(m.top1)} | {drop} | "
                     f"{_num(m.onnx_error, '.2g')} | {o.seconds:.1f} |")
    lines += [f"| {md(j.name)} | ⏳ {PENDING_WHY[state]} | | | | | | | |" for j in pending]
    gated = [o for o in outcomes if o.gates]
    if gated:
        lines += ["", "## Gates", "", "| run | gate | measured | limit | result |", "|---|---|---:|---:|---|"]
        for o in gated:
            for g in o.gates:
                lines.append(f"| {md(o.name)} | {md(g.name)} | {g.measured_text} | {g.relation} {g.limit:g} | "
                             f"{'passed' if g.passed else '**missed**'} |")
    problems = [o for o in outcomes if o.message]
    if problems:
        lines += ["", "## Failures", ""] + [f"- {md(o.name, table=False)} ({md(o.source, table=False)}): "
                                            f"{md(o.message, table=False)}" for o in problems]
    return "\n".join(lines) + "\n"


def junit(outcomes: list[Outcome], pending: list[Job] = (), state: str = "finished") -> str:
    """JUnit XML: a `failure` for a missed gate, an `error` for a run that did not complete or has not run
    (fail-fast's runs not run are `skipped`)."""
    c = counts(outcomes)
    skipped = len(pending) if state == "finished" else 0
    errors = c["errors"] + len(pending) - skipped
    seconds = f"{sum(o.seconds for o in outcomes):.3f}"
    tests = str(c["total"] + len(pending))
    suites = ET.Element("testsuites", name="tnncompress batch", tests=tests, failures=str(c["failed"]),
                        errors=str(errors), time=seconds)
    suite = ET.SubElement(suites, "testsuite", name="tnncompress batch", tests=tests, failures=str(c["failed"]),
                          errors=str(errors), skipped=str(skipped), time=seconds)
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=xml(f"tnncompress.batch.{Path(o.source).stem}"),
                             name=xml(o.name), time=f"{o.seconds:.3f}", file=xml(o.source))
        if o.status == "failed":
            ET.SubElement(case, "failure", message=xml(o.message or ""), type="gate").text = \
                xml("\n".join(g.describe() for g in o.gates), limit=8 * 2000)
        elif o.status == "error":
            ET.SubElement(case, "error", message=xml(o.message or ""), type="run").text = \
                xml(o.detail or o.message or "", limit=8 * 2000)
        out = [f"output: {o.directory}"] + [g.describe() for g in o.gates]
        if o.reused:
            out.append("reused: completed by an earlier batch with the same recipe and inputs, its artifacts verified")
        elif o.not_reused:
            out.append(f"not reused: {o.not_reused}")
        ET.SubElement(case, "system-out").text = xml("\n".join(out), limit=8 * 2000)
    for job in pending:
        case = ET.SubElement(suite, "testcase", classname=xml(f"tnncompress.batch.{Path(job.source).stem}"),
                             name=xml(job.name), time="0.000", file=xml(job.source))
        if state == "finished":
            ET.SubElement(case, "skipped", message=PENDING_WHY[state])
        else:
            ET.SubElement(case, "error", message=PENDING_WHY[state], type="not-run")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
