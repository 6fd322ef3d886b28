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


@dataclass
class Compressed:
    """What the stages between loading and evaluation leave, for the report."""

    student: torch.nn.Module
    choices: list
    plans: list
    decomposed: list
    refitted: list
    replaced: list
    points: list  # StageRecord per stage before distillation, with its accuracy
    distilled: object = None  # DistillResult
    spectral: object = None
    learned: object = None  # the BQN stage's state, still to be finished on rank 0


def run(recipe: Recipe, force: bool = False, resume: bool = False) -> RunResult:
    """Run a checked recipe; `force` replaces an existing output, `resume` continues a kept distillation."""
    clock = Stopwatch()
    out = destination(recipe.out or default_out(recipe))
    spec = parse_spec(recipe.data.spec) if recipe.data.spec else None
    check_file(recipe.model.checkpoint, "checkpoint")
    ctx = setup_processes(resolve_device(recipe.device))
    prepare(recipe)
    inputs = inputs_of(recipe) if ctx.main else None  # what manifest.json says the results were made from
    if not ctx.main:
        progress.set_enabled(False)
    trains = recipe.distill.enabled or recipe.bqn.enabled  # a stage that keeps checkpoints a run can resume from
    # The destination is checked, locked and test-written before any slow work; under torchrun rank 0
    # prepares it and the others use the same paths.
    staging = (staged_directory(out, force, resumable=trains, resume=resume, inputs=_inputs(recipe, spec),
                                needed_bytes=_output_estimate(recipe)) if ctx.main
               else contextlib.nullcontext(workspace(out)))
    with staging as ws:
        ctx.barrier()  # rank 0 has prepared the staging directory
        with clock.stage("load"):
            loaded, test, train = stages.load(recipe, spec)
            pool = before_work(recipe, loaded, train)
        if trains and ctx.main:
            _check_resumable(ws, recipe, resume)
        done = compress_stages(recipe, loaded, test, train, pool, ctx, clock, ws.checkpoints, resume)
        if ctx.distributed:  # the processes part here: rank 0 evaluates and writes alone
            ctx.barrier()
            leave_processes()
        if not ctx.main:
            return RunResult(out, None, done.student)
        bqn, codes, student, accuracy = evaluate_stage(recipe, loaded, done, test, ctx, clock)
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
        report = report_of(recipe, loaded, done, student, accuracy, clock, pool, bqn, onnx=onnx,
                           load_forms=load_forms, latency=latency, sizes=sizes, int8=int8)
        write_report(ws.output, report)
        write_text(ws.output / RECIPE_FILE, recipe.to_yaml())
        write_manifest(ws.output, recipe, inputs)  # last: it hashes every other file
    return RunResult(out, report, student)


def prepare(recipe: Recipe) -> None:
    """The process-wide settings a run takes from its recipe: threads, the plan cache, the seed."""
    use_threads(recipe.threads)
    plan_cache.set_enabled(recipe.plan_cache)
    forget_plans()  # this run's plans are recorded from here (and a resumed one's pinned from its checkpoint)
    torch.manual_seed(recipe.seed)


def before_work(recipe: Recipe, loaded, train):
    """Checks that refuse a run before any slow work, and the calibration pool."""
    if recipe.bqn.enabled:
        stages.check_bqn(recipe, loaded)
    return stages.calibration(recipe, train)


def compress_stages(recipe: Recipe, loaded, test, train, pool, ctx, clock: Stopwatch, checkpoints: Path | None,
                    resume: bool = False) -> Compressed:
    """plan -> Layer-Decomp (or orthogonalise) -> [data-aware] -> [norms] -> [spectral] -> [distil] -> [BQN]:
    every stage up to evaluation, in every process under torchrun. `checkpoints`: where distillation and
    BQN keep their state (None: nowhere, an in-memory run)."""
    orthogonal = recipe.spectral.orthogonal  # selected convolutions become orthogonal, not factorised
    with clock.stage("plan"):
        choices, plans = (stages.select(recipe, loaded), []) if orthogonal else stages.plan(recipe, loaded, pool)
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
    done = Compressed(student, choices, plans, decomposed, refitted, replaced, points, spectral=spectral)
    if recipe.distill.enabled:
        with clock.stage("distill"):
            done.distilled = stages.distillation(recipe, loaded, student, train, test, ctx, checkpoints, resume,
                                                 pool, before=points[-1], spectral=control)
    densify(student)  # orthogonal convolutions as the plain ones they compute, from here on
    if control is not None:
        with clock.stage("spectral"):
            done.spectral = stages.spectral_end(recipe, loaded, student, control, spectral)
    if recipe.bqn.enabled:  # every process learns; rank 0 evaluates and exports
        with clock.stage("bqn"):
            done.learned = stages.bqn_learn(recipe, loaded, student, train, ctx, checkpoints, resume, pool)
    return done


def evaluate_stage(recipe: Recipe, loaded, done: Compressed, test, ctx, clock: Stopwatch):
    """(BQN report, its codes, the model to evaluate and export, its accuracy): the BQN stage finished
    (its MAP network is the model from here), then the evaluation of the original and the compressed."""
    bqn, codes, student = None, None, done.student
    if done.learned is not None:
        with clock.stage("bqn"):
            bqn, codes, student = stages.bqn_finish(recipe, loaded, done.learned, test, ctx)
    with clock.stage("evaluate"):
        accuracy = stages.accuracy(recipe, loaded, student, test, ctx, done.points[0])
    return bqn, codes, student, accuracy


def report_of(recipe: Recipe, loaded, done: Compressed, student, accuracy, clock: Stopwatch, pool, bqn, *,
              onnx=None, load_forms=None, latency=None, sizes=None, int8=None) -> RunReport:
    """The run's report from the stages' results (an in-memory run has no export, latency or sizes)."""
    c = recipe.compress
    why = [d.why_no_speedup(speedup_hint(d, c.rank_multiple, c.deploy_target) if d.runtime == "onnxruntime" else "")
           for d in (onnx.forms if onnx else None, load_forms) if d is not None and d.models]
    warnings = (latency.slower_than_original() if latency else []) + [w for w in why if w] + \
               ([e.describe() for e in done.distilled.events] if done.distilled else [])
    report = build_report(recipe=recipe, loaded=loaded, original=loaded.model, compressed=student,
                          rows=layer_rows(done.choices, done.plans, done.decomposed, onnx, done.refitted, load_forms,
                                          done.replaced),
                          accuracy=accuracy, seconds={**clock.seconds, "total": clock.total()}, warnings=warnings,
                          distillation=done.distilled, onnx=onnx, latency=latency)
    report.cpu_seconds = {**clock.cpu_seconds, "total": clock.total_cpu()}
    report.plans = plan_cache.chosen()
    report.stages = done.points
    report.calibration = pool.describe() if pool is not None else None
    report.load_forms = load_forms
    report.spectral = done.spectral
    report.bqn = bqn
    report.sizes = sizes
    report.int8 = int8
    report.gates = judge(recipe.gates, report)
    return report


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
