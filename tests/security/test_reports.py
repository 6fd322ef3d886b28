"""Reports and summaries are written to be read by people and CI tools, not to act on them (issue 25,
items 4 and 5): no file is written through a link, and no string from a file renders as markup in
report.md or a GitHub job summary (checked with GitHub's own renderer, cmark-gfm) or reaches a
terminal as a control sequence."""

from __future__ import annotations

import dataclasses
import os
import re

import cmarkgfm
import pytest
import torch
from cmarkgfm.cmark import Options
from torch import nn

from tests.report.test_report import report  # noqa: F401 (the fixture)
from tnncompress.batch.runner import Outcome
from tnncompress.batch.summary import markdown as summary_markdown
from tnncompress.report import render_markdown, write_report

from .conftest import invoke

HOSTILE = [
    "layer\n| injected | row |\necho PWNED",
    "[click](https://evil.example/x)",
    "![pixel](https://evil.example/p.png)",
    "<img src=x onerror=alert(1)><script>alert(1)</script>",
    "a|b`c``d",
    "mail admin@evil.example or www.evil.example or https://evil.example",
    "\x1b[2J\u202eevil\u200b",
]


def github_html(markdown: str) -> str:
    """What GitHub shows for this markdown (its renderer with its extensions; raw HTML let through, so that
    any HTML the text smuggled would show up)."""
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


def assert_inert(html: str) -> None:
    assert "<a " not in html and "<img" not in html and "<script" not in html, html


def table_rows(html: str, header: str) -> list[str]:
    """The body rows of the table whose header has `header`."""
    for table in re.findall(r"<table>.*?</table>", html, re.S):
        if header in table.split("</thead>")[0]:
            return re.findall(r"<tr>.*?</tr>", table.split("<tbody>")[1], re.S) if "<tbody>" in table else []
    raise AssertionError(f"no table with {header!r}")


def test_report_md_shows_hostile_names_as_text(report):  # noqa: F811
    layers = [dataclasses.replace(row, name=HOSTILE[i % len(HOSTILE)], reason=HOSTILE[-1 - i % len(HOSTILE)])
              for i, row in enumerate(report.layers)]
    report = dataclasses.replace(report, layers=layers, warnings=HOSTILE, model=dataclasses.replace(
        report.model, checkpoint=HOSTILE[0]))
    md = render_markdown(report)
    assert not any(line.startswith("echo PWNED") for line in md.splitlines())
    assert "\x1b" not in md and "\u202e" not in md
    html = github_html(md)
    assert_inert(html)
    assert len(table_rows(html, "kernel error")) == len(report.layers)  # one row per layer, no injected row
    assert "injected" not in "".join(re.findall(r"<td>([^<]*)</td>", html))  # never a cell of its own


def test_summary_md_shows_hostile_names_and_messages_as_text():
    outcomes = [Outcome(name, name, {}, "out", "error", message=name) for name in HOSTILE]
    html = github_html(summary_markdown(outcomes, "tnncompress batch " + HOSTILE[0]))
    assert_inert(html)
    assert len(table_rows(html, "top-1 original")) == len(HOSTILE)


def test_the_report_command_never_writes_through_a_link(report, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_report(run_dir, report)
    victim = tmp_path / "victim.txt"
    victim.write_text("export PATH=/usr/bin\n")
    before = victim.read_bytes()
    for name in ("report.md", "report.html"):
        os.unlink(run_dir / name)
        os.symlink("../victim.txt", run_dir / name)
        r = invoke("report", run_dir)
        assert r.exit_code == 2 and "symbolic link" in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert victim.read_bytes() == before and os.path.islink(run_dir / name)
        os.unlink(run_dir / name)
    (run_dir / "report.md").unlink()
    (run_dir / "report.md").mkdir()  # not a regular file either
    r = invoke("report", run_dir)
    assert r.exit_code == 2 and "a directory" in r.output
    os.rmdir(run_dir / "report.md")
    r = invoke("report", run_dir)
    assert r.exit_code == 0 and (run_dir / "report.md").is_file() and not (run_dir / "report.md").is_symlink()
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.html", "report.json", "report.md"]  # no debris


class Hostile(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("conv\x1b[2J\x1b]0;title\x07", nn.Conv2d(1, 4, 3))
        self.add_module("fc", nn.Linear(4 * 26 * 26, 10))

    def forward(self, x):
        return self.fc(self.get_submodule("conv\x1b[2J\x1b]0;title\x07")(x).flatten(1))


def test_no_control_sequence_from_a_file_reaches_the_terminal(tmp_path):
    path = tmp_path / "hostile.pt"
    torch.save(Hostile(), path)
    for args in (["inspect", path, "--trust-checkpoint", "--input-size", "1,28,28", "--all-layers"],
                 ["eval", path, "--trust-checkpoint", "--input-size", "1,28,28", "-d", "synthetic?n=8"],
                 ["spectrum", path, "--trust-checkpoint", "--input-size", "1,28,28", "--no-network"]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output, args
    assert "conv\\x1b[2J" in invoke(*(["inspect", path, "--trust-checkpoint", "--input-size", "1,28,28"])).output


@pytest.mark.parametrize("text", HOSTILE)
def test_each_medium_escapes_what_it_must(text):
    from xml.etree import ElementTree as ET

    from tnncompress import escape

    assert not any(c in escape.terminal(text) for c in "\x1b\u202e\u200b\r")
    ET.fromstring(f"<a>{escape.html(escape.xml(text))}</a>")  # well-formed
    assert "<" not in escape.html(text) and ">" not in escape.html(text)
    assert_inert(github_html(f"| a |\n|---|\n| {escape.markdown(text)} |\n"))
