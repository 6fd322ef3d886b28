"""`tnncompress run`: compress a checkpoint to a target rate, export it and report it."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer
from rich.table import Table

from tnncompress.pipeline import OPTIONS, resolve
from tnncompress.pipeline import run as run_pipeline
from tnncompress.report import RunReport
from tnncompress.report.gates import GATE_EXIT_CODE, missed
from tnncompress.report.html import REPORT_HTML
from tnncompress.schema import to_data

from .common import DebugOpt, JsonOpt, QuietOpt, VerboseOpt, err, handle_errors, labelled, out, start
from .options import command

EXAMPLES = """Examples:

  tnncompress run resnet50.pt --arch torchvision:resnet50 --format mcp --rate 0.05

  tnncompress run resnet32_fashion_mnist.safetensors --format mtt --rate 0.1 --data fashion-mnist

  tnncompress run model.pt --format tk --rate 0.3 --rate-by flops --exclude "layer4.*" --out tk30

  tnncompress run model.pt --ranks ranks.yaml              # per-layer formats and ranks

  tnncompress run --recipe out/recipe.yaml --set rate=0.02 --set distill.lr=3e-3 -o out2  # repeat, with changes

  tnncompress run resnet32.safetensors --format mcp --rate 0.1 --data fashion-mnist --kd seq --kd-epochs 4

  tnncompress run model.pt -f cp -r 0.1 -d cifar10:~/data --kd e2e --kd-loss kl --kd-ce-weight 0.5 --kd-steps 5000

  torchrun --nproc-per-node 4 $(which tnncompress) run model.pt -f mtt -r 0.05 -d cifar10:~/data --kd seq

An interrupted distillation keeps its checkpoint next to the output directory: rerun the same command
with --resume to continue it.

Writes DIR/model.safetensors + structure.json (tnncompress.load(DIR)), model.onnx, report.json,
report.md and recipe.yaml. Exit codes: 0 done, 1 run-time failure, 2 bad input, 3 the ONNX export does
not reproduce the model, 4 a gate of the recipe missed (everything is written), 130 interrupted (143
SIGTERM, 129 SIGHUP).
"""


def _run(given: dict, recipe: str | None, set_: list[str] | None, resume: bool, force: bool, json: bool,
         quiet: bool, verbose: int, debug: bool) -> None:
    """Compress a CNN into a tensorial network: Layer-Decomp to a target rate, distillation, ONNX, report."""
    resolved = resolve(recipe, given, set_ or [])
    session = start(json, quiet, verbose, debug, resolved.seed)
    result = run_pipeline(resolved, force=force, resume=resume)
    report = result.report
    if report is None:  # another torchrun process than rank 0: rank 0 reports
        return
    if not quiet:
        for warning in report.warnings:
            err.print(labelled("warning:", "bold yellow", warning), highlight=False)
    session.result({"directory": str(result.directory), **to_data(report)}, lambda: _render(report, result.directory))
    if missed(report.gates):
        for gate in missed(report.gates):
            err.print(labelled("gate missed:", "bold red", gate.describe()), highlight=False)
        raise typer.Exit(GATE_EXIT_CODE)


_EXTRA = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
          for name, default, annotation in (
              ("recipe", None, Annotated[str | None, typer.Option("--recipe", help="A YAML recipe.", metavar="FILE")]),
              ("set_", None, Annotated[list[str] | None, typer.Option("--set", help="Set an option: key=value.")]),
              ("resume", False, Annotated[bool, typer.Option("--resume", help="Continue a kept distillation.")]),
              ("force", False, Annotated[bool, typer.Option("--force", help="Replace the output directory.")]),
              ("json", False, JsonOpt), ("quiet", False, QuietOpt), ("verbose", 0, VerboseOpt),
              ("debug", False, DebugOpt))]

run = handle_errors(command(_run, OPTIONS.options, _EXTRA))


def _render(report: RunReport, directory) -> None:
    p, f, acc = report.params, report.flops, report.accuracy
    target = (f"rate {report.target_rate} ({report.rate_by})" if report.target_rate is not None
              else "ranks from the ranks file")
    orthogonal = sum(r.status == "orthogonal" for r in report.layers)
    table = Table(title=f"{orthogonal} layers made orthogonal (SC-Fac)" if orthogonal else
                  f"{report.format} at {target}: {report.layers_compressed} layers compressed")
    for col in ("", "original", "compressed", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("parameters", f"{p.original:,}", f"{p.compressed:,}", f"{p.rate:.4f}")
    if p.compressible_rate is not None:
        table.add_row("compressed layers", f"{p.compressible_original:,}", f"{p.compressible_compressed:,}",
                      f"{p.compressible_rate:.4f}")
    table.add_row("FLOPs / sample", f"{f.original:,}", f"{f.compressed:,}", f"{f.ratio:.4f}")
    if acc.original is not None and acc.compressed is not None:
        for stage in report.stages if report.distillation else []:  # what each stage before distillation left
            if stage.top1 is not None:
                table.add_row(f"top-1 after {stage.stage} ({stage.samples} samples)", "",
                              f"{100 * stage.top1:.2f}%", "")
        table.add_row(f"top-1 ({acc.samples} samples)", f"{100 * acc.original.top1:.2f}%",
                      f"{100 * acc.compressed.top1:.2f}%", "")
        if report.int8 and report.int8.accuracy is not None:
            table.add_row(f"top-1 of model.int8.onnx ({report.int8.accuracy.samples} samples)",
                          f"{100 * acc.original.top1:.2f}%", f"{100 * report.int8.accuracy.top1:.2f}%", "")
    if report.sizes:  # the files a user ships, against the original's
        s = report.sizes
        for name, size in s.artifacts.items():
            base = s.original.get("onnx") if name.endswith(".onnx") else s.original.get("checkpoint")
            what = "original ONNX" if name.endswith(".onnx") else "checkpoint"
            table.add_row(f"{name} bytes (vs the {what})", f"{base:,}" if base else "-", f"{size:,}",
                          f"{size / base:.3f}" if base else "")
    if report.latency:
        for runtime, batch, e in report.latency.rows():
            table.add_row(f"{runtime} ms (batch {batch})", f"{e.original_ms:.2f}", f"{e.compressed_ms:.2f}",
                          f"{e.speedup:.2f}x faster" if e.speedup >= 1 else f"{e.speedup:.2f}x")
    out.print(table)
    errors = sorted(r.rel_error for r in report.layers if r.rel_error is not None)
    skipped = [r for r in report.layers if r.status == "skipped" and r.format]
    if errors:
        out.print(f"relative reconstruction error per layer: median {errors[len(errors) // 2]:.4f}, max "
                  f"{errors[-1]:.4f}" + (f"; {len(skipped)} layers could not meet the rate" if skipped else ""))
    if report.onnx:
        out.print(f"ONNX check: max |onnxruntime - PyTorch| = {report.onnx.check.max_abs_error:.2g}")
    for gate in report.gates:
        out.print(gate.describe())
    out.print(f"written to {directory}/; the report: {directory / REPORT_HTML}")
