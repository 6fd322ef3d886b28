"""`tnncompress run`: load -> select -> plan -> Layer-Decomp -> [distil] -> evaluate -> export -> report.

Each stage is a call into its package; this module only threads the results through and writes the
output directory atomically. Under torchrun every process runs the stages up to distillation (which
they share); only rank 0 evaluates, exports and writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..compress import compress_model, plan_model, select_layers
from ..data import DataSpec, fashion_mnist_dir, load_data, parse_spec
from ..distill import distil
from ..distill import setup as setup_processes
from ..distill import teardown as leave_processes
from ..env import resolve_device
from ..errors import UsageError
from ..evaluate import check_compatible, evaluate, output_classes
from ..export import deployable, operator_counts, to_onnx, verify, write_compressed
from ..export.onnx_graph import OPSET
from ..formats.layer import planned
from ..io import load_model
from ..io.files import check_file
from ..report.build import build_report, layer_rows
from ..report.latency import measure_latency, slower_than_original
from ..report.markdown import render_markdown
from .recipe import EXECUTION_KEYS, Recipe, distill_config, read_recipe
from .staging import Workspace, destination, staged_directory, workspace

ONNX_FILE, REPORT_JSON, REPORT_MD, RECIPE_FILE = "model.onnx", "report.json", "report.md", "recipe.yaml"


@dataclass
class RunResult:
    directory: Path
    report: dict  # empty on the processes other than rank 0 under torchrun
    model: torch.nn.Module  # the compressed model, as saved


def default_out(recipe: Recipe) -> Path:
    rate = f"{recipe.rate:g}" if recipe.rate is not None else "ranks"
    kd = f"-{recipe.kd}" if recipe.kd != "none" else ""
    return Path(f"{Path(recipe.checkpoint).stem}-{recipe.format}-{rate}{kd}")


def run(recipe: Recipe, force: bool = False, say: Callable[[str], None] = lambda _: None,
        show_progress: bool = True, resume: bool = False,
        on_checkpoint: Callable[[dict], None] | None = None) -> RunResult:
    clock = {}
    started = time.perf_counter()
    out = destination(recipe.out or default_out(recipe))
    kd = recipe.kd != "none"
    data_spec = parse_spec(recipe.data) if recipe.data else None
    check_file(recipe.checkpoint, "checkpoint")
    ctx = setup_processes(resolve_device(recipe.device))
    say = say if ctx.main else (lambda _: None)
    show_progress = show_progress and ctx.main
    torch.manual_seed(recipe.seed)
    # The destination is checked, locked and test-written before any slow work; under torchrun rank 0
    # prepares it and the others use the same paths.
    staging_cm = (staged_directory(out, force, resumable=kd, resume=resume, inputs=_inputs(recipe, data_spec),
                                   needed_bytes=_output_estimate(recipe), say=say) if ctx.main
                  else contextlib.nullcontext(workspace(out)))
    with staging_cm as ws:
        ctx.barrier()  # rank 0 has prepared the staging directory
        staging = ws.output
        loaded = load_model(recipe.checkpoint, arch=recipe.arch, trust=recipe.trust_checkpoint,
                            input_size=recipe.input_size)
        if loaded.arch.startswith("pickled"):
            raise UsageError("run needs a state-dict checkpoint and an architecture (--arch) so the result can be "
                             "rebuilt without unpickling; this checkpoint holds a whole pickled module")
        say(f"architecture {loaded.arch} ({loaded.arch_how})")
        test, train = _load_data(recipe, data_spec, loaded, kd, say)
        input_size = loaded.input_size
        clock["load"] = time.perf_counter() - started

        t = time.perf_counter()
        choices = select_layers(loaded.model, input_size, recipe.include, recipe.exclude)
        plans = plan_model(loaded.model, choices, recipe.format, recipe.rate, recipe.rate_by, recipe.modes,
                           recipe.ranks)
        if not any(p.ranks for p in plans):
            raise UsageError("no layer can be compressed at this rate: " + (plans[0].reason if plans else
                                                                             "no layer is selected"))
        clock["plan"] = time.perf_counter() - t
        if kd and ctx.main:
            _check_resumable(ws, recipe, resume, say)
        t = time.perf_counter()
        student, results = compress_model(loaded.model, plans, seed=recipe.seed, show_progress=show_progress,
                                          device=ctx.device)
        clock["layer_decomp"] = time.perf_counter() - t
        say(f"Layer-Decomp: {len(results)} layers in {clock['layer_decomp']:.1f} s")

        distillation = None
        if kd:
            t = time.perf_counter()
            ws.checkpoints.mkdir(exist_ok=True)
            # The checkpoints stay until the output is in place: an interrupt during evaluation or export
            # resumes from the distilled student instead of distilling again.
            distillation = distil(loaded.model, student, train, test, input_size, distill_config(recipe), ctx,
                                  checkpoint_dir=ws.checkpoints, resume=resume, say=say,
                                  show_progress=show_progress, on_checkpoint=on_checkpoint)
            loaded.model.cpu(), student.cpu()
            clock["distill"] = time.perf_counter() - t
        if ctx.distributed:  # the processes part here: rank 0 evaluates and writes alone
            ctx.barrier()
            leave_processes()
        if not ctx.main:
            return RunResult(out, {}, student)

        accuracy = {"original": None, "compressed": None, "layer_decomp": None, "data": None, "samples": None,
                    "metrics": None}
        if test is not None:
            t = time.perf_counter()
            with planned(student, "measure"):  # FLOP-optimal chains are slow on small layers
                metrics = {name: evaluate(model, test, batch_size=recipe.batch_size, device=ctx.device,
                                          limit=recipe.eval_limit, show_progress=show_progress,
                                          description=f"evaluating ({name})")
                           for name, model in (("original", loaded.model), ("compressed", student))}
            loaded.model.cpu(), student.cpu()
            accuracy.update(original=metrics["original"]["top1"], compressed=metrics["compressed"]["top1"],
                            data=test.source, samples=metrics["original"]["samples"], metrics=metrics,
                            layer_decomp=(distillation["curve"][0]["top1"] if distillation
                                          else metrics["compressed"]["top1"]))
            clock["evaluate"] = time.perf_counter() - t

        t = time.perf_counter()
        write_compressed(staging, student, loaded.arch, loaded.arch_kwargs, input_size,
                         metadata={"recipe": asdict(recipe)})
        onnx, deploy = _export(staging, student, input_size, recipe)
        clock["export"] = time.perf_counter() - t
        latency, warnings = None, []
        if recipe.latency:
            t = time.perf_counter()
            say("measuring latency")
            original_graph = to_onnx(loaded.model, input_size) if onnx is not None else None
            graph = (staging / ONNX_FILE).read_bytes() if onnx is not None else None
            latency = measure_latency(loaded.model, student, original_graph, graph, input_size,
                                      tuple(recipe.latency_batches), seed=recipe.seed)
            warnings = slower_than_original(latency)
            clock["latency"] = time.perf_counter() - t
        if distillation:
            warnings += [f"{e['phase']}: loss {e['loss']} at step {e['step']}: {e['action']}"
                         for e in distillation["events"]]
        clock["total"] = time.perf_counter() - started
        rows = layer_rows(choices, plans, results, deploy)
        report = build_report(recipe=asdict(recipe), loaded=loaded, original=loaded.model, compressed=student,
                              rows=rows, accuracy=accuracy, latency=latency, onnx=onnx, seconds=clock,
                              warnings=warnings, distillation=distillation)
        (staging / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
        (staging / REPORT_MD).write_text(render_markdown(report))
        (staging / RECIPE_FILE).write_text(recipe.to_yaml())
    return RunResult(out, report, student)


def _inputs(recipe: Recipe, spec) -> list[str]:
    """The files and directories a run reads: its output directory must not hold any of them."""
    paths = [recipe.checkpoint, recipe.ranks, spec.path if spec is not None else None]
    if spec is not None and spec.kind == "fashion-mnist":
        paths.append(str(fashion_mnist_dir()[0]))
    return [str(p) for p in paths if p]


def _output_estimate(recipe: Recipe) -> int:
    """Bytes the output may need: the weights, the ONNX graph and distillation checkpoints (weights and
    Adam's two moments) are each at most about the checkpoint's size."""
    return 4 * os.path.getsize(recipe.checkpoint) + (16 << 20)


def _load_data(recipe: Recipe, spec, loaded, kd: bool, say):
    """The test split (for accuracy) and, for distillation, the training split; both are checked
    against the model before any work starts."""
    if spec is None:
        return None, None
    classes = output_classes(loaded.model, loaded.input_size) if spec.kind == "synthetic" else None
    test = load_data(spec, "test", input_size=loaded.input_size, num_classes=classes)
    if recipe.input_size is None and test.input_size != loaded.input_size:
        loaded.input_size = test.input_size  # the input size defaults to the dataset's
    check_compatible(loaded.model, test)
    say(f"data: {test.source}, {len(test)} test samples")
    train = None
    if kd:
        train = load_data(spec, "train", input_size=loaded.input_size, num_classes=classes)
        check_compatible(loaded.model, train)
        say(f"distilling on {train.source}, {len(train)} training samples"
            + "".join(f" ({n})" for n in train.notes if "subset" in n))
    return test, train


def _check_resumable(ws: Workspace, recipe: Recipe, resume: bool, say) -> None:
    """A resumed run must compute what the interrupted one computed: refuse other options."""
    if resume and ws.recipe.is_file():
        before, now = _comparable(read_recipe(ws.recipe)), _comparable(asdict(recipe))
        changed = sorted(k for k, v in now.items() if k not in EXECUTION_KEYS and before.get(k, v) != v)
        if changed:
            raise UsageError(f"--resume: the interrupted run in {ws.root} used other values of "
                             f"{', '.join(changed)}; rerun with the same options, or --force to start over")
    elif resume:
        say(f"nothing to resume in {ws.root}; starting from the beginning")
    ws.recipe.write_text(recipe.to_yaml())


def _comparable(values: dict) -> dict:
    """Recipe values with paths made absolute, so `--out o` and `--out $PWD/o` are the same run; the
    output directory itself is the workspace's, compared by being there."""
    values = {k: v for k, v in values.items() if k != "out"}
    for key in ("checkpoint", "ranks"):
        if values.get(key):
            values[key] = os.path.realpath(values[key])
    if values.get("data"):
        spec = parse_spec(values["data"])
        values["data"] = str(DataSpec(spec.kind, Path(os.path.realpath(spec.path)) if spec.path else None,
                                      spec.options))
    return values


def _export(staging: Path, student, input_size, recipe: Recipe):
    if not recipe.onnx:
        return None, []
    deployed, deploy = deployable(student, input_size, recipe.deploy_batch, recipe.deploy_form)
    graph = to_onnx(deployed, input_size)
    check = verify(graph, student, input_size, seed=recipe.seed)
    (staging / ONNX_FILE).write_bytes(graph)
    onnx = {"file": ONNX_FILE, "opset": OPSET, "operators": operator_counts(graph), **check,
            "deploy_batch": recipe.deploy_batch, "deploy_form": recipe.deploy_form,
            "factor_layers": sum(d.form == "factors" for d in deploy),
            "dense_layers": sum(d.form == "dense" for d in deploy)}
    return onnx, deploy
