"""report.md: the report of a run, for people.

It is made from report.json alone, which is a file like any other: every string it holds (the checkpoint's
path, layer names, which are state-dict keys, reasons, warnings) is shown as a code span by
`escape.markdown`, so none can add a table row, a link, an image or HTML.
"""

from __future__ import annotations

from ..distill import DistillResult
from ..escape import markdown as md
from .html import size_rows
from .model import Accuracy, RunReport


def _num(n: float | int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def _code(text: object) -> str:
    """A string from the report, outside a table."""
    return md(text, table=False)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ranks(r: dict | None) -> str:
    return "-" if not r else md(" ".join(f"{k}={v}" for k, v in r.items()))


def _distillation(d: DistillResult, acc: Accuracy) -> list[str]:
    name = {"seq": "Seq-KD", "e2e": "E2E-KD"}.get(d.algorithm, _code(d.algorithm))
    b = d.budget
    compressed = acc.compressed.top1 if acc.compressed else None
    start = d.curve[0] if d.curve else None
    lines = ["", f"## Distillation ({name})", "",
             f"{d.updates} gradient updates of batch {b.batch_size} ({b.epochs:.2f} epochs of "
             f"{_code(d.train['source'])}, {d.train['samples']} samples) on {_code(d.device)}"
             + (f", {d.world_size} processes" if d.world_size > 1 else "")
             + (f", from a wall-clock budget of {b.seconds:.0f} s" if b.seconds else "") + "; before distillation: "
             f"{_pct(start.top1 if start else None)} ({start.samples if start else 0} test samples), after: "
             f"{_pct(compressed)} ({acc.samples} test samples)."]
    if d.cache is not None:
        c = d.cache
        kinds = sorted(set(c.dtypes.values()))
        lines.append(f"Activation cache: {c.samples} calibration images, {c.entries} tensors, "
                     f"{c.bytes / 2 ** 20:.1f} MiB in {_code(c.storage)} ({_code(', '.join(kinds))}), "
                     f"built in {c.seconds:.1f} s.")
    if d.seconds:  # where the wall clock went (a budget counts all of it)
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in d.seconds.items() if k != "total" and v)
        over = (f"; {d.seconds['total'] - b.seconds:+.1f} s against the budget" if b.seconds else "")
        lines.append(f"Wall clock: {d.seconds.get('total', 0.0):.1f} s ({parts}){over}.")
    stopped = [u for u in d.phases if u.planned_steps is not None]
    if stopped:
        lines.append("Stopped at the budget's deadline: " + ", ".join(
            f"{md(u.phase)} after {u.steps} of {u.planned_steps} steps" for u in stopped) + ".")
    lines += ["", "| after | updates | top-1 (curve samples) |", "|---|---:|---:|"]
    lines += [f"| {md(p.after)} | {p.updates} | {_pct(p.top1)} |" for p in d.curve]
    lines += ["", "| phase | steps | trained params | first loss | mean loss | updates/s | images/s | seconds | "
              "CPU seconds | lr reductions |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {md(u.phase)} | {u.steps} | {_num(u.trained_params)} | {u.first_loss or 0:.4g} | "
              f"{u.mean_loss:.4g} | {u.steps / max(u.seconds, 1e-9):.1f} | {u.images_per_s:.0f} | "
              f"{u.wall_seconds:.1f} | {u.cpu_seconds:.1f} | {u.lr_reductions} |" for u in d.phases]
    return lines


def render_markdown(report: RunReport) -> str:
    p, f, acc = report.params, report.flops, report.accuracy
    target = report.target_rate
    lines = [f"# tnncompress report: {_code(report.model.checkpoint)}", "",
             f"- architecture: {_code(report.model.arch)}, input size "
             f"{_code(report.input_size)}",
             f"- format: {_code(report.format)}"
             + (f" (layers use {_code(', '.join(report.formats_used))})"
                if report.formats_used != [report.format] else ""),
             f"- target rate: {target if target is not None else 'from the ranks file'} "
             f"(by {_code(report.rate_by)}), seed {report.seed}",
             f"- tnncompress {_code(report.tnncompress_version)}, torch "
             f"{_code(report.versions.get('torch'))}"
             + (f", {report.threads} CPU threads" if report.threads else ""),
             "", "## Summary", "", "| | original | compressed | ratio |", "|---|---:|---:|---:|",
             f"| parameters (model) | {_num(p.original)} | {_num(p.compressed)} | {p.rate:.4f} |",
             f"| parameters (compressed layers) | {_num(p.compressible_original)} | "
             f"{_num(p.compressible_compressed)} | {p.compressible_rate:.4f} |" if p.compressible_rate is not None
             else "| parameters (compressed layers) | - | - | - |",
             f"| FLOPs per sample | {_num(f.original)} | {_num(f.compressed)} | {f.ratio:.4f} |"]
    if acc.original is not None and acc.compressed is not None:
        lines.append(f"| top-1 accuracy ({md(acc.data)}, {acc.samples} samples) | {_pct(acc.original.top1)} | "
                     f"{_pct(acc.compressed.top1)} | |")
    if report.gates:
        lines += ["", "## Gates", "", "| gate | measured | limit | result |", "|---|---:|---:|---|"]
        for g in report.gates:
            lines.append(f"| {md(g.name)} ({md(g.what)}) | {g.measured_text} | {g.relation} {g.limit:g} | "
                         f"{'passed' if g.passed else '**missed**'} |")
    if report.stages:
        lines += ["", "## Stages", "", "Accuracy after each stage before distillation, on the curve's test samples; "
                  "seconds are the stage's own (wall clock, and CPU time of all threads)."
                  + (f" Calibration pool: {_code(report.calibration.source)}."
                     if report.calibration else ""), "",
                  "| stage | seconds | CPU seconds | top-1 |", "|---|---:|---:|---:|"]
        lines += [f"| {md(p.stage)} | {p.seconds:.1f} | {p.cpu_seconds:.1f} | {_pct(p.top1)} |" for p in report.stages]
    if report.distillation:
        lines += _distillation(report.distillation, acc)
    if report.spectral:
        lines += _spectral(report.spectral)
    if report.bqn:
        lines += _bqn(report.bqn)
    if report.int8:
        lines += _int8(report.int8, acc)
    if report.sizes:
        lines += ["", "## Sizes", "", "| file | bytes | the original's | ratio |", "|---|---:|---:|---:|"]
        lines += [f"| {md(name)} | {size} | {base} | {ratio} |" for name, size, base, ratio in size_rows(report.sizes)]
    if report.latency:
        lines += ["", "## Latency", "", f"Median milliseconds per batch, {report.latency.threads} threads.", "",
                  "| runtime | batch | original | compressed | speed-up |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {md(runtime)} | {md(batch)} | {e.original_ms:.2f} | {e.compressed_ms:.2f} | {e.speedup:.2f}x |"
                  for runtime, batch, e in report.latency.rows()]
    onnx = report.onnx
    lines += ["", "## ONNX", ""]
    if onnx is None:
        lines += ["Not exported (--no-onnx).", ""]
    else:
        lines += [f"opset {onnx.opset}, dynamic batch; onnx.checker {onnx.check.checker}; onnxruntime vs PyTorch "
                  f"max |error| {onnx.check.max_abs_error:.3g} (rtol {onnx.check.rtol}, atol {onnx.check.atol})"
                  + (f", {onnx.check.differing} of {onnx.check.samples} inputs beyond it (quantised activations: "
                     "a rounding threshold between the runtimes' float32 results)" if onnx.check.differing else "")
                  + f"; layers as factor chains: {onnx.factor_layers}, as rebuilt dense kernels: {onnx.dense_layers}; "
                  + ("the file stores the factors, and the graph computes the kernels and chain products from them"
                     + ("" if onnx.folded is None else ", which onnxruntime folds once when a session starts."
                        if onnx.folded else ": onnxruntime did **not** fold them, it computes them at every call.")
                     if onnx.weights == "factors" else "the file stores the dense kernels and chain products."),
                  "", *_forms(onnx.forms)]
    if report.load_forms is not None:
        lines += ["## Load form", "", "The form each layer takes in `tnncompress.load(DIR)` (eager PyTorch; "
                  "`load(DIR, form=\"factors\")` gives the trainable factors).", "", *_forms(report.load_forms)]
    if report.warnings:
        lines += ["## Warnings", "", *(f"- {_code(w)}" for w in report.warnings), ""]
    lines += ["## Layers", "", "Errors are relative: the kernel's (weight-space Layer-Decomp), and the layer's output "
              "on the calibration pool before and after data-aware fitting.", "",
              "| layer | status | format | ranks | params | rate | kernel error | output error | ONNX form | load form "
              "| note |",
              "|---|---|---|---|---:|---:|---:|---:|---|---|---|"]
    for r in report.layers:
        err = "-" if r.rel_error is None else f"{r.rel_error:.4f}"
        out = "-" if r.output_error is None else f"{r.output_error:.4f} -> {r.output_error_refit:.4f}"
        rate = "-" if r.rate is None else f"{r.rate:.4f}"
        lines.append(f"| {md(r.name)} | {md(r.status)} | {md(r.format or '-')} | {_ranks(r.ranks)} | "
                     f"{_num(r.params_original)} -> {_num(r.params_compressed)} | {rate} | {err} | {out} | "
                     f"{md(r.deploy_form or '-')} | {md(r.load_form or '-')} | {md(r.reason)} |")
    lines += ["", "Repeat this run with `tnncompress run --recipe recipe.yaml` (in this directory).", ""]
    return "\n".join(lines)


def _int8(q, acc: Accuracy) -> list[str]:
    """model.int8.onnx: how it was made, its check, its accuracy in onnxruntime and the forms' INT8 times."""
    c = q.check
    lines = ["", "## INT8 (model.int8.onnx)", "",
             f"Static post-training quantization by onnxruntime's tools (QDQ, per-channel INT8 weights, UINT8 "
             f"activations), ranges calibrated ({_code(q.calibration)}) on {q.calibration_samples} pool images; "
             f"{q.bytes:,} bytes. Check: top-1 labels agree with the float model on {100 * c.clear_agreement:.1f}% "
             f"of the {c.clear} of {c.samples} pool images whose float label is clear (at least "
             f"{100 * c.min_agreement:.0f}%; {100 * c.agreement:.1f}% of all), relative logit error "
             f"{c.logit_error:.3g} (at most {c.max_logit_error:g})."]
    if q.accuracy is not None:
        float_top1 = acc.compressed.top1 if acc.compressed else None
        original = acc.original.top1 if acc.original else None
        lines.append(f"Top-1 in onnxruntime on {q.accuracy.samples} test samples: {_pct(q.accuracy.top1)} "
                     f"(float compressed model {_pct(float_top1)}, original {_pct(original)}); NLL "
                     f"{q.accuracy.nll:.4f}, ECE {q.accuracy.ece:.4f}.")
    if q.models:
        lines += ["", "Forms quantized and timed in INT8 (ms per batch; the fastest is kept):", "",
                  "| forms | ms per batch | |", "|---|---:|---|"]
        lines += [f"| {md(name)} | {' / '.join(f'{v:.2f}' for v in ms.values())} | "
                  f"{'**kept**' if name == q.assignment else ''} |" for name, ms in q.models.items()]
    else:
        lines.append(f"Forms quantized: {_code(q.assignment)}.")
    return lines


def _sigma(value: float | None, lower: float | None, exact: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if exact or lower is None else f"{lower:.4g} .. {value:.4g}"


def _bound(b) -> str:
    if b is None:
        return "-"
    upper = f"{b.upper:.4g}" if b.upper is not None else f"none ({b.why})"
    return f"upper {upper}, measured {b.lower:.4g}" if b.lower is not None else f"upper {upper}"


def _spectral(s) -> list[str]:
    """The constraint, each compressed layer's sigma_max before and after it, and the network's bounds."""
    what = s.constraint or "none"
    lines = ["", "## Spectral control", "",
             f"Constraint {_code(what)}, projected every {s.every} steps and once after distillation ({s.projections} "
             f"passes); orthogonality penalty {s.orthogonality:g}; batch-norm gain bound "
             f"{'-' if s.bn is None else f'{s.bn:g}'}.",
             f"Network Lipschitz bound (L2) before: {_bound(s.network_before)}; after: {_bound(s.network_after)}.",
             "", "sigma_max of each layer as an operator at its input size: exact for circular padding, else "
             "`power iteration .. certified upper bound`; `with BN` folds the batch norm after it in. After a clip, "
             "sigma_max <= C + the projection's error.", "",
             "| layer | sigma_max before | after | with BN before | after | projection | error |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for r in s.layers:
        err = "-" if r.projection_error is None else f"{r.projection_error:.3g}"
        lines.append(f"| {md(r.name)} | {_sigma(r.sigma_before, r.sigma_before_lower, r.exact)} | "
                     f"{_sigma(r.sigma_after, r.sigma_after_lower, r.exact)} | "
                     f"{_sigma(r.with_bn_before, None, True)} | {_sigma(r.with_bn_after, None, True)} | "
                     f"{md(r.projection or '-')} | {err} |")
    return lines


def _bqn(b) -> list[str]:
    """The posterior's setting and size, and top-1 / NLL / ECE of the float student, PTQ and the three
    evaluations of the BQN."""
    size, t = b.size, b.training
    which = "factors and dense layers" if b.dense else "the compressed layers' factors"
    lines = ["", "## Bayesian quantized network", "",
             f"{b.bits}-bit categorical posterior over {size.quantised_weights:,} weights in {len(b.tensors)} "
             f"tensors ({which}); lambda {b.lam:g}, targets {_code(b.targets)}; {t.steps} updates in "
             f"{t.seconds:.0f} s, final KL to the uniform prior {t.kl:.4g} nats, temperature "
             f"{t.temperature:.3f}"
             + (f", categoricals annealed to temperature 1/{b.sharpen:g}" if b.sharpen != 1 else "") + ". "
             + (f"Every concrete QNN's batch norms re-estimated on {b.recalibrated:,} pool images."
                if b.recalibrated else "Concrete QNNs keep the float student's batch-norm statistics.")
             + (" The float parameters learned with the posterior." if b.train_float else ""),
             *_activations(b.activations),
             f"MAP QNN: {size.bytes:,} bytes ({size.bits_per_weight:.2f} bits per weight over all weights) "
             f"against {size.float32_bytes:,} in float32 ({size.ratio:.2f}x smaller); codes in "
             f"{_code(b.codes_file)}; "
             + (f"the temperature is folded into {_code(b.temperature_folded_into)}, so the exported logits are the "
                "evaluated ones." if b.temperature_folded_into else
                "the temperature is not folded into the export (its output is not a linear layer's): exported "
                "logits are the evaluated ones times the temperature (top-1 is the same)."), ""]
    analytic = "BQN analytic (NLL: Theorem 5.2 bound)" if b.analytic_inexact is None else \
        "BQN analytic (NLL: approximation, not a bound)"
    rows = [("float student", b.float_student), (f"PTQ, {b.bits} bit (round to nearest)", b.ptq),
            (analytic, b.analytic), (f"BQN Monte Carlo, S = {b.samples} (NLL of the averaged prediction)", b.mc),
            ("BQN MAP (exported)", b.map)]
    if all(m is None for _, m in rows):
        return lines + ["No test data: not evaluated.", ""]
    lines += ["| model | top-1 | NLL | ECE |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {_pct(m.top1)} | {m.nll:.4f} | {m.ece:.4f} |" for name, m in rows if m is not None]
    if b.analytic is not None and b.expected_nll is not None:
        what = ("an upper bound on it: the propagated moments are exact (Gaussian logits assumed)"
                if b.analytic_inexact is None else f"an approximation of it, not a bound ({_code(b.analytic_inexact)})")
        lines += ["", f"Expected NLL over the posterior, E_w[NLL], by Monte Carlo ({b.samples} sampled QNNs): "
                  f"{b.expected_nll:.4f} +- {b.expected_nll_se or 0:.4f}; the analytic NLL {b.analytic.nll:.4f} is "
                  f"{what}; the difference is {b.analytic.nll - b.expected_nll:+.4f}."]
    return lines


def _activations(a) -> list[str]:
    if a is None:
        return []
    kind = "sign activations ({-1, +1})" if a.bits == 1 else f"{a.bits}-bit quantised ReLUs"
    steps = a.learned_steps
    span = f"; steps {min(steps.values()):.3g} to {max(steps.values()):.3g} after training" if steps else ""
    return [f"Activations: {len(a.nodes)} ReLUs became {kind}{span}; batch norms re-estimated on "
            f"{a.recalibrated:,} pool images under them before the posterior was learned."]


_ASSIGNMENT = {"measured": "each layer its fastest form", "dense": "every layer dense",
               "factors": "every layer its FLOP-optimal chain"}


def _forms(d) -> list[str]:
    """How a runtime's forms were decided: the whole-model times of each assignment, and per layer the
    candidates' times (ms per batch; batch sizes separated by /)."""
    batches = " / ".join(str(b) for b in d.batches)
    if not d.models:
        return [f"Form {_code(d.picked)} for every layer (not timed).", ""]
    lines = [f"Timed in {_code(d.runtime)} at batch {batches}; the assignment with the lowest geometric mean of the "
             "whole model's times is kept.", "", "| assignment | ms per batch | |", "|---|---:|---|"]
    lines += [f"| {_ASSIGNMENT.get(name, md(name))} | {' / '.join(f'{v:.2f}' for v in ms.values())} | "
              f"{'**kept**' if name == d.picked else ''} |" for name, ms in d.models.items()]
    names = sorted({c for layer in d.layers for c in layer.ms}, key=lambda c: (c != "dense", c != "optimal", c))
    lines += ["", "Per layer, ms per batch of each candidate (`optimal`, `greedy`, `naive`: factor chains "
              "by that plan):",
              "", "| layer | form | " + " | ".join(md(n) for n in names) + " |", "|---|---|" + "---:|" * len(names)]
    for layer in d.layers:
        cells = [" / ".join(f"{v:.3f}" for v in layer.ms[c].values()) if c in layer.ms else "-" for c in names]
        lines.append(f"| {md(layer.name)} | {md(layer.label)} | " + " | ".join(cells) + " |")
    return [*lines, ""]
