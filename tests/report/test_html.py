"""report.html as a person sees it: rendered by headless Chromium, its plots load and its numbers show."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.report import html as report_html
from tnncompress.report import read_report

SMALL_CNN = Path(__file__).resolve().parents[2] / "tnncompress/models/checkpoints/small_cnn_fashion_mnist.safetensors"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
# Written into the page's copy: once loaded, the body says how many images it has and how many decoded.
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];document.body.setAttribute("
         "'data-images',i.length+'/'+i.filter(x=>x.complete&&x.naturalWidth>0).length)})</script>")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "out"
    r = CliRunner().invoke(app, ["run", str(SMALL_CNN), "-f", "tk", "-r", "0.3", "-d", "fashion-mnist", "--kd", "e2e",
                                 "--kd-steps", "4", "--kd-eval-limit", "100", "--kd-batch-size", "32",
                                 "--eval-limit", "200", "--latency-batches", "1", "--deploy-form", "flops",
                                 "--init", "weights", "--calib-samples", "256", "--no-recalibrate-bn",
                                 "--gate-max-rate", "0.5", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    return out


def render(page: Path, tmp_path: Path) -> str:
    """The DOM after load, as Chromium builds it."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no headless browser (Debian: apt-get install chromium)")
def test_the_report_renders_with_its_plots_loaded_and_its_numbers_shown(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    report = read_report(run_dir / "report.json")
    dom = render(run_dir / "report.html", tmp_path)
    total, loaded = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
    # the distillation curve, per-layer bars, parameters and FLOPs, latency
    assert total == 4 and loaded == total
    text = re.sub(r"<[^>]+>", " ", dom)
    for number in (f"{report.params.original:,}", f"{report.params.compressed:,}", f"{report.params.rate:.4f}",
                   f"{100 * report.accuracy.compressed.top1:.2f}%", f"{100 * report.accuracy.original.top1:.2f}%"):
        assert number in text, number
    assert "max_rate" in text and "passed" in text
    assert all(row.name in text for row in report.layers)


def test_without_matplotlib_the_page_says_how_to_get_the_plots(run_dir, monkeypatch):
    monkeypatch.setattr(report_html, "_plt", lambda: None)
    page = report_html.report_html(read_report(run_dir / "report.json"))
    assert "<img" not in page and "tnncompress[report]" in page and "Layers" in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched


def test_user_text_is_escaped(run_dir):
    report = read_report(run_dir / "report.json")
    report.warnings = ["<script>alert(1)</script>"]
    page = report_html.report_html(report)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_the_report_command_rewrites_the_pages_and_prints_the_path(run_dir):
    (run_dir / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(run_dir)])
    assert r.exit_code == 0 and r.output.strip() == str(run_dir / "report.html")
    assert "<h2>Layers</h2>" in (run_dir / "report.html").read_text()
    r = CliRunner().invoke(app, ["report", str(run_dir.parent)])
    assert r.exit_code == 2 and "no report.json" in r.output
