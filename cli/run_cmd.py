"""`tnncompress run`: compress a checkpoint to a target rate, export it and report it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tnncompress.pipeline import resolve
from tnncompress.pipeline import run as run_pipeline

from .common import DebugOpt, JsonOpt, QuietOpt, VerboseOpt, err, handle_errors, labelled, out, say, start

EXAMPLES = """Examples:

  tnncompress run resnet50.pt --arch torchvision:resnet50 --format mcp --rate 0.05

  tnncompress run resnet32_fashion_mnist.safetensors --format mtt --rate 0.1 --data fashion-mnist

  tnncompress run model.pt --format tk --rate 0.3 --rate-by flops --exclude "layer4.*" --out tk30

  tnncompress run model.pt --ranks ranks.yaml              # per-layer formats and ranks

  tnncompress run --recipe out/recipe.yaml --set rate=0.02 --set out=out2   # repeat, with changes

  tnncompress run resnet32.safetensors --format mcp --rate 0.1 --data fashion-mnist --kd seq --kd-epochs 4

  tnncompress run model.pt -f cp -r 0.1 -d cifar10:~/data --kd e2e --kd-loss kl --kd-ce-weight 0.5 --kd-steps 5000

  torchrun --nproc-per-node 4 $(which tnncompress) run model.pt -f mtt -r 0.05 -d cifar10:~/data --kd seq

An interrupted distillation keeps its checkpoint next to the output directory: rerun the same command
with --resume to continue it.

Writes DIR/model.safetensors + structure.json (tnncompress.load(DIR)), model.onnx, report.json,
report.md and recipe.yaml. Exit codes: 0 done, 1 run-time failure, 2 bad input, 3 the ONNX export does
not reproduce the model, 130 interrupted (143 SIGTERM, 129 SIGHUP).
"""


def _opt(*names: str, help: str, **kw):  # noqa: A002  (typer's keyword)
    return typer.Option(*names, help=help, show_default=False, **kw)


@handle_errors
def run(
    checkpoint: Annotated[str | None, typer.Argument(
        help="Checkpoint: .pt/.pth state dict or .safetensors (or give it in --recipe).", show_default=False)] = None,
    format: Annotated[str | None, _opt("--format", "-f", help="svd, cp, tk, tt, tr, mcp, mtk, mtt or mtr "
                                       "\\[default: mcp].")] = None,  # noqa: A002
    rate: Annotated[float | None, _opt("--rate", "-r", help="Per layer: parameters (or FLOPs) after / before, "
                                       "in (0, 1].")] = None,
    rate_by: Annotated[str | None, _opt("--rate-by", help="params or flops \\[default: params].")] = None,
    ranks: Annotated[str | None, _opt("--ranks", help="YAML/JSON file of per-layer formats and ranks "
                                      "(or a report.json).")] = None,
    include: Annotated[list[str] | None, _opt("--include", help="Compress only layers matching this glob "
                                              "(or re:REGEX); repeatable.")] = None,
    exclude: Annotated[list[str] | None, _opt("--exclude", help="Leave layers matching this pattern dense; "
                                              "repeatable.")] = None,
    modes: Annotated[int | None, _opt("--modes", help="m, the number of channel modes of reshaped formats "
                                      "\\[default: 3].")] = None,
    data: Annotated[str | None, _opt("--data", "-d", help="Dataset spec to evaluate on (fashion-mnist, "
                                     "cifar10:DIR, imagefolder:DIR, ...); none: no accuracy.")] = None,
    eval_limit: Annotated[int | None, _opt("--eval-limit", help="Evaluate on the first N test samples.")] = None,
    kd: Annotated[str | None, _opt("--kd", help="Knowledge distillation after Layer-Decomp: seq (Seq-KD), e2e "
                                   "(E2E-KD) or none \\[default: none]; needs --data.")] = None,
    seq_unit: Annotated[str | None, _opt("--seq-unit", help="Seq-KD unit: layer (+ its norm) or block "
                                         "\\[default: layer].")] = None,
    kd_steps: Annotated[int | None, _opt("--kd-steps", help="Budget of gradient updates (Seq-KD: shared "
                                         "evenly by the units).")] = None,
    kd_epochs: Annotated[float | None, _opt("--kd-epochs", help="Budget as passes over the training set "
                                            "\\[default: 2].")] = None,
    kd_finetune_steps: Annotated[int | None, _opt("--kd-finetune-steps", help="Seq-KD: end-to-end updates on "
                                                  "the logits after the last unit \\[default: 0].")] = None,
    kd_lr: Annotated[float | None, _opt("--kd-lr", help="Adam learning rate \\[default: 1e-3].")] = None,
    kd_warmup_steps: Annotated[int | None, _opt("--kd-warmup-steps", help="Raise the learning rate linearly over "
                                                "the first N steps of each phase \\[default: 0].")] = None,
    kd_decay_at: Annotated[list[float] | None, _opt("--kd-decay-at", help="Multiply the learning rate by 0.1 at "
                                                    "this fraction of each phase; repeatable \\[default: 0.5, "
                                                    "0.75].")] = None,
    kd_loss: Annotated[str | None, _opt("--kd-loss", help="Logit loss: mse or kl \\[default: mse].")] = None,
    kd_temperature: Annotated[float | None, _opt("--kd-temperature", help="Temperature of --kd-loss kl "
                                                 "\\[default: 4].")] = None,
    kd_ce_weight: Annotated[float | None, _opt("--kd-ce-weight", help="Weight of cross-entropy on the labels "
                                               "in the logit loss, in [0, 1] \\[default: 0].")] = None,
    kd_batch_size: Annotated[int | None, _opt("--kd-batch-size", help="Training batch (global under torchrun) "
                                              "\\[default: 128].")] = None,
    kd_eval_limit: Annotated[int | None, _opt("--kd-eval-limit", help="Test samples behind each point of the "
                                              "accuracy curve \\[default: 2000].")] = None,
    workers: Annotated[int | None, _opt("--workers", help="Data-loading workers \\[default: 2].")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted distillation.")] = False,
    out_dir: Annotated[str | None, _opt("--out", "-o", help="Output directory \\[default: CHECKPOINT-FORMAT-RATE].")
                       ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    arch: Annotated[str | None, _opt("--arch", help="torchvision:NAME, tnncompress:NAME or "
                                     "package.module:factory \\[default: detect].")] = None,
    input_size: Annotated[str | None, _opt("--input-size", help="C,H,W \\[default: the data's, or the "
                                           "architecture's].")] = None,
    trust_checkpoint: Annotated[bool | None, _opt("--trust-checkpoint", help="Allow unpickling a whole "
                                                  "module.")] = None,
    device: Annotated[str | None, _opt("--device", help="auto, cpu, cuda or cuda:N \\[default: auto].")] = None,
    onnx: Annotated[bool | None, _opt("--onnx/--no-onnx", help="Export and check model.onnx \\[default: on].")
                    ] = None,
    deploy_form: Annotated[str | None, _opt("--deploy-form", help="ONNX per layer: auto (the faster, measured), "
                                            "flops (by FLOPs), dense or factors \\[default: auto].")] = None,
    deploy_batch: Annotated[int | None, _opt("--deploy-batch", help="Batch size the ONNX cost model assumes "
                                             "\\[default: 1].")] = None,
    latency: Annotated[bool | None, _opt("--latency/--no-latency", help="Measure latency \\[default: on].")] = None,
    recipe: Annotated[str | None, _opt("--recipe", help="YAML recipe: any of these options as keys.")] = None,
    set_: Annotated[list[str] | None, _opt("--set", help="Override a recipe key: key=value; repeatable.")] = None,
    seed: Annotated[int | None, _opt("--seed", help="Seed of the decompositions \\[default: 0].")] = None,
    json: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = 0, debug: DebugOpt = False,
) -> None:
    """Compress a CNN into a tensorial network: Layer-Decomp to a target rate, distillation, ONNX, report."""
    options = {"checkpoint": checkpoint, "format": format, "rate": rate, "rate_by": rate_by, "ranks": ranks,
               "include": include or None, "exclude": exclude or None, "modes": modes, "data": data,
               "eval_limit": eval_limit, "kd": kd, "seq_unit": seq_unit,
               "kd_steps": kd_steps, "kd_epochs": kd_epochs, "kd_finetune_steps": kd_finetune_steps, "kd_lr": kd_lr,
               "kd_warmup_steps": kd_warmup_steps,
               "kd_decay_at": kd_decay_at or None, "kd_loss": kd_loss, "kd_temperature": kd_temperature,
               "kd_ce_weight": kd_ce_weight, "kd_batch_size": kd_batch_size, "kd_eval_limit": kd_eval_limit,
               "workers": workers, "out": out_dir, "arch": arch, "input_size": input_size,
               "trust_checkpoint": trust_checkpoint, "device": device, "onnx": onnx, "deploy_form": deploy_form,
               "deploy_batch": deploy_batch, "latency": latency, "seed": seed}
    resolved = resolve(recipe, options, set_ or [])
    session = start(json, quiet, verbose, debug, resolved.seed)
    result = run_pipeline(resolved, force=force, resume=resume, say=lambda m: say(session, m),
                          show_progress=not (quiet or json))
    report = result.report
    if not report:  # another torchrun process than rank 0: rank 0 reports
        return
    for warning in report["warnings"]:
        err.print(labelled("warning:", "bold yellow", warning), highlight=False)
    session.result({"directory": str(result.directory), **report}, lambda: _render(report, result.directory))


def _render(report: dict, directory) -> None:
    p, f, acc = report["params"], report["flops"], report["accuracy"]
    target = (f"rate {report['target_rate']} ({report['rate_by']})" if report["target_rate"] is not None
              else "ranks from the ranks file")
    table = Table(title=f"{report['format']} at {target}: {report['layers_compressed']} layers compressed")
    for col in ("", "original", "compressed", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("parameters", f"{p['original']:,}", f"{p['compressed']:,}", f"{p['rate']:.4f}")
    if p["compressible_rate"] is not None:
        table.add_row("compressed layers", f"{p['compressible_original']:,}", f"{p['compressible_compressed']:,}",
                      f"{p['compressible_rate']:.4f}")
    table.add_row("FLOPs / sample", f"{f['original']:,}", f"{f['compressed']:,}",
                  f"{f['compressed'] / max(f['original'], 1):.4f}")
    if acc["original"] is not None:
        if report.get("distillation"):
            d = report["distillation"]
            table.add_row(f"top-1 after Layer-Decomp ({d['curve'][0].get('samples')} samples)", "",
                          f"{100 * acc['layer_decomp']:.2f}%", "")
        table.add_row(f"top-1 ({acc['samples']} samples)", f"{100 * acc['original']:.2f}%",
                      f"{100 * acc['compressed']:.2f}%", "")
    for runtime in ("pytorch_cpu", "onnxruntime_cpu", "pytorch_cuda"):
        for batch, e in ((report["latency"] or {}).get(runtime) or {}).items():
            if isinstance(e, dict):
                table.add_row(f"{runtime} ms (batch {batch})", f"{e['original_ms']:.2f}", f"{e['compressed_ms']:.2f}",
                              f"{e['speedup']:.2f}x faster" if e["speedup"] >= 1 else f"{e['speedup']:.2f}x")
    out.print(table)
    errors = [r["rel_error"] for r in report["layers"] if r["rel_error"] is not None]
    skipped = [r for r in report["layers"] if r["status"] == "skipped" and r["format"]]
    out.print(f"relative reconstruction error per layer: median {sorted(errors)[len(errors) // 2]:.4f}, "
              f"max {max(errors):.4f}" + (f"; {len(skipped)} layers could not meet the rate" if skipped else ""))
    if report["onnx"]:
        out.print(f"ONNX check: max |onnxruntime - PyTorch| = {report['onnx']['max_abs_error']:.2g}")
    out.print(f"written to {directory}/ (report.md for details)")
