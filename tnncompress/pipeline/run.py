"""`tnncompress run`: load -> plan -> Layer-Decomp -> [distil] -> evaluate -> export -> latency -> report
-> manifest.

This module sequences the stages (stages.py), times them, and writes the output directory atomically
(staging.py). Under torchrun every process runs the stages up to distillation (which they share);
only rank 0 evaluates, exports and writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import progress
from ..bayes.export import write_codes
from ..data import fashion_mnist_dir, parse_spec
from ..distill import setup as setup_processes
from ..distill import teardown as leave_processes
from ..einsum import forget_plans, plan_cache
from ..env import resolve_device
from ..errors import UsageError, opt
from ..export.choose import speedup_hint
from ..io import check_file, write_text
from ..report import RunReport, build_report, layer_rows, write_report
from ..report.gates import judge
from ..spectral.replace import densify
from ..threads import use_threads
from ..timing import Stopwatch
from . import stages
from .manifest import inputs_of, recipe_values, write_manifest
from .recipe import Recipe, read_recipe
from .staging import Workspace, destination, staged_directory, workspace

RECIPE_FILE = "recipe.yaml"
log = logging.getLogger(__name__)


@dataclass
class RunResult:
    directory: Path
    report: RunReport | None  # None on the processes other than rank 0 under torchrun
    model: torch.nn.Module  # the compressed model, as saved


def run(recipe: Recipe, force: bool = False, resume: bool = False,
        on_checkpoint: Callable[[dict], None] | None = None) -> RunResult:
    """Run a checked recipe; `force` replaces an existing output, `resume` continues a kept distillation."""
    clock = Stopwatch()
    out = destination(recipe.out or default_out(recipe))
    spec = parse_spec(recipe.data.spec) if recipe.data.spec else None
    check_file(recipe.model.checkpoint, "checkpoint")
    ctx = setup_processes(resolve_device(recipe.device))
    use_threads(recipe.threads)
    plan_cache.set_enabled(recipe.plan_cache)
    forget_plans()  # this run's plans are recorded from here (and a resumed one's pinned from its checkpoint)
    inputs = inputs_of(recipe) if ctx.main else None  # what manifest.json says the results were made from
    if not ctx.main:
        progress.set_enabled(False)
    torch.manual_seed(recipe.seed)
    kd = recipe.distill.enabled
    trains = kd or recipe.bqn.enabled  # a stage that keeps checkpoints a run can resume from
    # The destination is checked, locked and test-written before any slow work; under torchrun rank 0
    # prepares it and the others use the same paths.
    staging = (staged_directory(out, force, resumable=trains, resume=resume, inputs=_inputs(recipe, spec),
                                needed_bytes=_output_estimate(recipe)) if ctx.main
               else contextlib.nullcontext(workspace(out)))
    with staging as ws:
        ctx.barrier()  # rank 0 has prepared the staging directory
        with clock.stage("load"):
            loaded, test, train = stages.load(recipe, spec)
            if recipe.bqn.enabled:
                stages.check_bqn(recipe, loaded)
            pool = stages.calibration(recipe, train)
        orthogonal = recipe.spectral.orthogonal  # selected convolutions become orthogonal, not factorised
        with clock.stage("plan"):
            choices, plans = (stages.select(recipe, loaded), []) if orthogonal else stages.plan(recipe, loaded, pool)
        if trains and ctx.main:
            _check_resumable(ws, recipe, resume)
        points, refitted, decomposed, replaced = [], [], [], []
        first = "orthogonalise" if orthogonal else "layer_decomp"
        with clock.stage(first):
            if orthogonal:
                student, replaced = stages.orthogonal(recipe, loaded, choices)
            else:
                student, decomposed = stages.decompose(recipe, loaded, plans, ctx)
        points.append(_point(first, student, test, recipe, ctx, clock))
        if pool is not None and stages.data_aware(recipe) and not orthogonal:
            with clock.stage("data_aware"):
                refitted = stages.refit(recipe, loaded, student, pool)
            points.append(_point("data_aware", student, test, recipe, ctx, clock))
        if pool is not None and recipe.calibrate.recalibrate_bn:
            with clock.stage("recalibrate_bn"):
                stages.recalibrate(student, pool, refitted, loaded.input_size)
            points.append(_point("recalibrate_bn", student, test, recipe, ctx, clock))
        with clock.stage("spectral"):
            control, spectral = stages.spectral_start(recipe, loaded, student, [r.name for r in replaced if r.replaced])
        distilled = None
        if kd:
            with clock.stage("distill"):
                distilled = stages.distillation(recipe, loaded, student, train, test, ctx, ws.checkpoints, resume,
                                                on_checkpoint, pool, before=points[-1], spectral=control)
        densify(student)  # orthogonal convolutions as the plain ones they compute, from here on
        if control is not None:
            with clock.stage("spectral"):
                spectral = stages.spectral_end(recipe, loaded, student, control, spectral)
        learned = None
        if recipe.bqn.enabled:  # every process learns; rank 0 evaluates and exports below
            with clock.stage("bqn"):
                learned = stages.bqn_learn(recipe, loaded, student, train, ctx, ws.checkpoints, resume, pool)
        if ctx.distributed:  # the processes part here: rank 0 evaluates and writes alone
            ctx.barrier()
            leave_processes()
        if not ctx.main:
            return RunResult(out, None, student)
        bqn, codes = None, None
        if learned is not None:
            with clock.stage("bqn"):
                bqn, codes, student = stages.bqn_finish(recipe, loaded, learned, test, ctx)
        with clock.stage("evaluate"):
            accuracy = stages.accuracy(recipe, loaded, student, test, ctx, points[0])
        with clock.stage("export"):
            onnx, load_forms, as_loaded, original_graph = stages.export(recipe, ws.output, loaded, student, codes)
            if codes is not None:
                write_codes(ws.output, codes, recipe.bqn.bits)
            int8, int8_graph = None, None
            if recipe.export.quantize == "int8":
                int8, int8_graph = stages.int8(recipe, ws.output, loaded, student, onnx.forms, pool, test, ctx)
            sizes = stages.sizes(recipe, ws.output, original_graph)
        latency = None
        if recipe.report.latency:
            with clock.stage("latency"):
                latency = stages.latency(recipe, ws.output, loaded, as_loaded, onnx, original_graph, int8_graph)
        c = recipe.compress
        why = [d.why_no_speedup(speedup_hint(d, c.rank_multiple, c.deploy_target) if d.runtime == "onnxruntime" else "")
               for d in (onnx.forms if onnx else None, load_forms) if d is not None and d.models]
        warnings = (latency.slower_than_original() if latency else []) + [w for w in why if w] + \
                   ([e.describe() for e in distilled.events] if distilled else [])
        report = build_report(recipe=recipe, loaded=loaded, original=loaded.model, compressed=student,
                              rows=layer_rows(choices, plans, decomposed, onnx, refitted, load_forms, replaced),
                              accuracy=accuracy,
                              seconds={**clock.seconds, "total": clock.total()}, warnings=warnings,
                              distillation=distilled, onnx=onnx, latency=latency)
        report.cpu_seconds = {**clock.cpu_seconds, "total": clock.total_cpu()}
        report.plans = plan_cache.chosen()
        report.stages = points
        report.calibration = pool.describe() if pool is not None else None
        report.load_forms = load_forms
        report.spectral = spectral
        report.bqn = bqn
        report.sizes = sizes
        report.int8 = int8
        report.gates = judge(recipe.gates, report)
        write_report(ws.output, report)
        write_text(ws.output / RECIPE_FILE, recipe.to_yaml())
        write_manifest(ws.output, recipe, inputs)  # last: it hashes every other file
    return RunResult(out, report, student)


def _point(name: str, student, test, recipe: Recipe, ctx, clock: Stopwatch):
    """The stage's record: its own seconds (the evaluation after it is not counted) and the accuracy."""
    return stages.point(name, student, test if ctx.main else None, recipe, ctx, clock.seconds.get(name, 0.0),
                        clock.cpu_seconds.get(name, 0.0))


def default_out(recipe: Recipe) -> Path:
    rate = f"{recipe.compress.rate:g}" if recipe.compress.rate is not None else "ranks"
    kd = f"-{recipe.distill.algorithm}" if recipe.distill.enabled else ""
    return Path(f"{Path(recipe.model.checkpoint).stem}-{recipe.compress.format}-{rate}{kd}")


def _inputs(recipe: Recipe, spec) -> list[str]:
    """The files and directories a run reads: its output directory must not hold any of them."""
    data = spec.path if spec is not None else None
    if spec is not None and spec.kind == "fashion-mnist":
        data = fashion_mnist_dir()[0]
    return [str(p) for p in (recipe.model.checkpoint, recipe.compress.ranks, data) if p]


def _output_estimate(recipe: Recipe) -> int:
    """Bytes the output may need: the weights, the ONNX graph and distillation checkpoints (weights and
    Adam's two moments) are each at most about the checkpoint's size."""
    return 4 * os.path.getsize(recipe.model.checkpoint) + (16 << 20)


def _check_resumable(ws: Workspace, recipe: Recipe, resume: bool) -> None:
    """A resumed run must compute what the interrupted one computed: refuse other options."""
    if resume and ws.recipe.is_file():
        before = comparable(Recipe.from_values(read_recipe(ws.recipe)))
        now = comparable(recipe)
        changed = sorted(k for k, v in now.items() if before.get(k, v) != v)
        if changed:
            raise UsageError(f"{opt('resume')}: the interrupted run in {ws.root} used other values of "
                             f"{', '.join(changed)}; rerun with the same options, or {opt('force')} to start over")
    elif resume:
        log.warning("nothing to resume in %s; starting from the beginning", ws.root)
    write_text(ws.recipe, recipe.to_yaml())


def comparable(recipe: Recipe) -> dict[str, object]:
    """What a resumed run must share with the interrupted one: every option that changes what is computed,
    with paths made absolute (`--out o` and `--out $PWD/o` are the same run)."""
    return recipe_values(recipe, lambda o: not o.execution and o.dotted != "out")
