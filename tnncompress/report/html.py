"""report.html and summary.html: self-contained pages (no network: styles inline, plots embedded as PNG
data URIs) a person opens in a browser or a CI artifact viewer.

Plots need matplotlib (`pip install 'tnncompress[report]'`); without it the pages hold the tables and say
how to get the plots. Every number a plot shows is also in a table, so the page reads without images.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

from .. import __version__, escape
from .latency import RUNTIMES
from .model import RunReport

REPORT_HTML = "report.html"
NO_PLOTS = ("Plots need matplotlib, which is not installed: <code>pip install 'tnncompress[report]'</code>, then "
            "<code>tnncompress report DIR</code> rewrites this page.")
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.passed{color:#107010;font-weight:600}.failed,.error,.missed{color:#b00000;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}figcaption{font-size:.85em;color:#555}
.note{background:#fff8e0;border:1px solid #eed;padding:.5em}code{background:#f4f4f4;padding:0 .2em}
"""


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: render to memory
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _figure(plt, draw: Callable, caption: str, size=(5.2, 3.4)) -> str:
    fig, ax = plt.subplots(figsize=size, dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _e(text: object) -> str:
    return escape.html(text)


def _table(header: list[str], rows: list[list[object]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i >= numeric_from else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}"
            f"<p><small>tnncompress {_e(__version__)}</small></p></body></html>\n")


def _gates(gates) -> list[str]:
    if not gates:
        return []
    rows = [[g.name, g.what, g.measured_text, f"{g.relation} {g.limit:g}", "passed" if g.passed else "missed"]
            for g in gates]
    return ["<h2>Gates</h2>", _table(["gate", "quantity", "measured", "limit", "result"], rows, 2)
            .replace("<td>missed</td>", '<td class="missed">missed</td>')]


def report_html(report: RunReport) -> str:
    """The page of one run."""
    p, f, acc = report.params, report.flops, report.accuracy
    body = [f"<h1>tnncompress report: {_e(report.model.checkpoint)}</h1>",
            f"<p>architecture <code>{_e(report.model.arch)}</code>, input {_e(report.input_size)}, format "
            f"<code>{_e(report.format)}</code>, target rate {_e(report.target_rate)} (by {_e(report.rate_by)}), "
            f"seed {report.seed}, torch {_e(report.versions.get('torch'))}</p>"]
    summary = [["parameters", f"{p.original:,}", f"{p.compressed:,}", f"{p.rate:.4f}"],
               ["FLOPs per sample", f"{f.original:,}", f"{f.compressed:,}", f"{f.ratio:.4f}"]]
    if acc.original is not None and acc.compressed is not None:
        summary.append([f"top-1 ({acc.data}, {acc.samples} samples)", _pct(acc.original.top1),
                        _pct(acc.compressed.top1), ""])
    body += ["<h2>Summary</h2>", _table(["", "original", "compressed", "ratio"], summary), *_gates(report.gates)]
    plt = _plt()
    plots = []
    if plt is None:
        body.append(f'<p class="note">{NO_PLOTS}</p>')
    else:
        plots = _run_plots(plt, report)
    if plots:
        body += ["<h2>Plots</h2>", '<div class="plots">', *plots, "</div>"]
    if report.int8 and report.int8.accuracy is not None:
        q = report.int8
        body.append(f"<h2>INT8</h2><p>model.int8.onnx ({q.bytes:,} bytes, {_e(q.assignment)} forms, "
                    f"{_e(q.calibration)} calibration on {q.calibration_samples} images): top-1 "
                    f"{_pct(q.accuracy.top1)} in onnxruntime on {q.accuracy.samples} test samples; labels agree "
                    f"with the float model on {100 * q.check.agreement:.1f}% of {q.check.samples} pool images.</p>")
    if report.sizes:
        body += ["<h2>Sizes</h2>", _table(["file", "bytes", "the original's", "ratio"], size_rows(report.sizes), 1)]
    if report.latency:
        body += ["<h2>Latency</h2>", _table(["runtime", "batch", "original ms", "compressed ms", "speed-up"], [
            [RUNTIMES.get(r, r), b, f"{e.original_ms:.2f}", f"{e.compressed_ms:.2f}", f"{e.speedup:.2f}x"]
            for r, b, e in report.latency.rows()], 1)]
    if report.distillation and report.distillation.curve:
        body += ["<h2>Distillation curve</h2>", _table(["after", "updates", "top-1", "samples"], [
            [c.after, c.updates, _pct(c.top1), c.samples or "-"] for c in report.distillation.curve])]
    body += ["<h2>Layers</h2>", _table(
        ["layer", "status", "format", "ranks", "params before", "params after", "rate", "kernel error", "output error"],
        [[r.name, r.status, r.format or "-", " ".join(f"{k}={v}" for k, v in (r.ranks or {}).items()) or "-",
          f"{r.params_original:,}", f"{r.params_compressed:,}", "-" if r.rate is None else f"{r.rate:.4f}",
          "-" if r.rel_error is None else f"{r.rel_error:.4f}",
          "-" if _output_error(r) is None else f"{_output_error(r):.4f}"] for r in report.layers], 4)]
    if report.onnx:
        body.append(f"<h2>ONNX</h2><p>opset {report.onnx.opset}; max |onnxruntime - PyTorch| "
                    f"{report.onnx.check.max_abs_error:.3g}; {report.onnx.factor_layers} layers as factor chains, "
                    f"{report.onnx.dense_layers} as dense kernels; weights stored as {_e(report.onnx.weights)}"
                    + ("" if report.onnx.folded is None else
                       "; onnxruntime folds them when a session starts" if report.onnx.folded else
                       "; onnxruntime did <strong>not</strong> fold them: it rebuilds them at every call")
                    + ".</p>")
    if report.warnings:
        body += ["<h2>Warnings</h2><ul>", *(f"<li>{_e(w)}</li>" for w in report.warnings), "</ul>"]
    return _page(f"tnncompress: {report.model.checkpoint}", body)


def size_rows(sizes) -> list[list[str]]:
    """Each artifact's bytes against the original's: ONNX graphs against the original's float32 graph, the
    rest against the checkpoint."""
    rows = [["original checkpoint", f"{sizes.original['checkpoint']:,}", "", ""]]
    if sizes.original.get("onnx"):
        rows.append(["original as ONNX (float32)", f"{sizes.original['onnx']:,}", "", ""])
    for name, size in sizes.artifacts.items():
        base = sizes.original.get("onnx") if name.endswith(".onnx") else sizes.original.get("checkpoint")
        rows.append([name, f"{size:,}", f"{base:,}" if base else "-", f"{size / base:.3f}" if base else "-"])
    return rows


def _output_error(row) -> float | None:
    return row.output_error_refit if row.output_error_refit is not None else row.output_error


def _run_plots(plt, report: RunReport) -> list[str]:
    plots = []
    points = report.distillation.curve if report.distillation else []
    curve = [(c.updates, c.top1) for c in points if c.top1 is not None]
    if curve:
        def draw_curve(ax):
            ax.plot([u for u, _ in curve], [100 * t for _, t in curve], marker="o")
            if report.accuracy.original is not None:
                ax.axhline(100 * report.accuracy.original.top1, color="gray", linestyle="--", label="original")
                ax.legend()
            ax.set_xlabel("updates")
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
        plots.append(_figure(plt, draw_curve, "Distillation: test top-1 after each phase / evaluation"))
    compressed = [r for r in report.layers if r.status == "compressed"]
    if compressed:
        def draw_layers(ax):
            names = [r.name for r in compressed]
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [r.rate for r in compressed], width=0.4, label="rate (params after / before)")
            errors = [_output_error(r) if _output_error(r) is not None else (r.rel_error or 0) for r in compressed]
            ax.bar([x + 0.2 for x in xs], errors, width=0.4, label="relative error (output, else kernel)")
            ax.set_xticks(list(xs), names, rotation=90, fontsize=6)
            ax.legend(fontsize=7)
            ax.grid(axis="y", alpha=0.3)
        plots.append(_figure(plt, draw_layers, "Per compressed layer: rate and relative output error", (7.5, 3.8)))

    def draw_sizes(ax):
        p, f = report.params, report.flops
        ax.bar([0, 1], [1, p.rate], width=0.35, label="parameters")
        ax.bar([0.4, 1.4], [1, f.ratio], width=0.35, label="FLOPs")
        ax.set_xticks([0.2, 1.2], [f"original\n{p.original:,} params", f"compressed\n{p.compressed:,} params"])
        ax.set_ylabel("relative to the original")
        ax.legend()
    plots.append(_figure(plt, draw_sizes, "Parameters and FLOPs before and after"))
    if report.latency and report.latency.rows():
        rows = report.latency.rows()

        def draw_latency(ax):
            labels = [f"{RUNTIMES.get(r, r)}\nbatch {b}" for r, b, _ in rows]
            xs = range(len(rows))
            ax.bar([x - 0.2 for x in xs], [e.original_ms for *_, e in rows], width=0.4, label="original")
            ax.bar([x + 0.2 for x in xs], [e.compressed_ms for *_, e in rows], width=0.4, label="compressed")
            ax.set_xticks(list(xs), labels, fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel("ms per batch")
            ax.legend()
        plots.append(_figure(plt, draw_latency, "Latency per runtime and batch size"))
    spectral = [layer for layer in (report.spectral.layers if report.spectral else []) if layer.sigma_after is not None]
    if spectral:
        def draw_spectra(ax):
            xs = range(len(spectral))
            ax.plot(list(xs), [s.sigma_before or 0 for s in spectral], "o", label="largest singular value before")
            ax.plot(list(xs), [s.sigma_after for s in spectral], "s", label="after")
            ax.set_xticks(list(xs), [s.name for s in spectral], rotation=90, fontsize=6)
            ax.legend(fontsize=7)
        plots.append(_figure(plt, draw_spectra, "Spectral norm per layer", (7.5, 3.8)))
    return plots


def summary_html(outcomes, doc: dict, directory: Path) -> str:
    """The page of a batch: its runs, their gates, and the trade-off plots across them."""
    state = {"running": "<strong>running</strong>: ", "interrupted": "<strong>interrupted</strong>: "}.get(
        doc.get("state"), "")
    body = [f"<h1>tnncompress batch: {doc['total'] + len(doc.get('not_run', []))} runs</h1>",
            f"<p>{state}{doc['passed']} passed, {doc['failed']} missed a gate, {doc['errors']} errors "
            f"({doc['reused']} reused, {doc['resumed']} resumed), {len(doc.get('not_run', []))} not run. "
            f"<code>{_e(doc['command'])}</code></p>"]
    rows = []
    for o in outcomes:
        m = o.metrics
        link = Path(o.directory) / REPORT_HTML
        name = (f'<a href="{_e(_relative(link, directory))}">{_e(o.name)}</a>' if link.is_file() else _e(o.name))
        rows.append(f'<tr><td>{name}</td><td class="{o.status}">{_e(o.status)}</td>'
                    + "".join(f'<td class="n">{_e(v)}</td>' for v in (
                        m.format or "-", "-" if m.rate is None else f"{m.rate:.4f}",
                        _pct(m.top1_original), _pct(m.top1), f"{o.seconds:.1f}"))
                    + f"<td>{_e(o.message or '')}</td></tr>")
    rows += [f'<tr><td>{_e(name)}</td><td class="error">not run</td>' + '<td class="n">-</td>' * 5
             + f"<td>{_e(doc.get('state'))}</td></tr>" for name in doc.get("not_run", [])]
    body += ["<h2>Runs</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in (
        "run", "status", "format", "rate", "top-1 original", "top-1", "seconds", "why")) + "</tr>" + "".join(rows)
        + "</table>"]
    gate_rows = [[o.name, g.name, g.measured_text, f"{g.relation} {g.limit:g}", "passed" if g.passed else "missed"]
                 for o in outcomes for g in o.gates]
    if gate_rows:
        body += ["<h2>Gates</h2>", _table(["run", "gate", "measured", "limit", "result"], gate_rows, 2)
                 .replace("<td>missed</td>", '<td class="missed">missed</td>')]
    plt = _plt()
    points = [o for o in outcomes if o.metrics.top1 is not None]
    if plt is None:
        body.append(f'<p class="note">{NO_PLOTS}</p>')
    elif points:
        plots = [_figure(plt, lambda ax: _scatter(ax, points, lambda m: m.rate, "parameter ratio"),
                         "Accuracy against parameter ratio")]
        timed = [o for o in points if o.metrics.latency_ms]
        if timed:
            key = _common_latency_key(timed)
            if key is not None:
                plots.append(_figure(plt, lambda ax: _scatter(ax, timed, lambda m: m.latency_ms[key],
                                                              f"latency ms ({key.replace(':', ', batch ')})"),
                                     f"Accuracy against latency ({key})"))
        body += ["<h2>Trade-offs</h2>", '<div class="plots">', *plots, "</div>"]
    return _page("tnncompress batch", body)


def _scatter(ax, outcomes, x_of, xlabel: str) -> None:
    for o in outcomes:
        x, y = x_of(o.metrics), 100 * o.metrics.top1
        ax.plot([x], [y], "o", color="tab:red" if o.status != "passed" else "tab:blue")
        ax.annotate(o.name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    originals = {o.metrics.top1_original for o in outcomes if o.metrics.top1_original is not None}
    for t in sorted(originals):
        ax.axhline(100 * t, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)


def _common_latency_key(outcomes) -> str | None:
    """The runtime and batch every timed run measured, preferring onnxruntime at batch 1."""
    keys = set.intersection(*(set(o.metrics.latency_ms) for o in outcomes))
    for preferred in ("onnxruntime_cpu:1", "pytorch_cpu:1"):
        if preferred in keys:
            return preferred
    return min(keys) if keys else None


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)
