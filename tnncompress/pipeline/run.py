"""`tnncompress run`: load -> plan -> Layer-Decomp -> [distil] -> evaluate -> export -> latency -> report
-> manifest.

This module loads the inputs, runs the stages of flow.py over them, and writes the output directory
atomically (staging.py). Under torchrun every process runs the stages up to learning (which they share);
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
from ..data import fashion_mnist_dir, parse_spec
from ..einsum import forget_plans, plan_cache
from ..env import resolve_device
from ..errors import UsageError, opt
from ..export.choose import speedup_hint
from ..io import check_file, write_text
from ..report import RunReport, build_report, layer_rows, write_report
from ..threads import use_threads
from ..timing import Stopwatch
from ..train import setup as setup_processes
from ..train import teardown as leave_processes
from . import flow, stages
from .flow import RunState, run_context, run_stages
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
        state = RunState(recipe, loaded, test, train, pool, run_context(recipe, ctx, ws.checkpoints, resume),
                         output=ws.output)
        run_stages(state, flow.SHARED, clock)
        if ctx.distributed:  # the processes part here: rank 0 evaluates and writes alone
            ctx.barrier()
            leave_processes()
        if not ctx.main:
            return RunResult(out, None, state.student)
        run_stages(state, flow.MAIN, clock)
        report = report_of(state, clock)
        write_report(ws.output, report)
        write_text(ws.output / RECIPE_FILE, recipe.to_yaml())
        write_manifest(ws.output, recipe, inputs)  # last: it hashes every other file
    return RunResult(out, report, state.student)


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


def report_of(s: RunState, clock: Stopwatch) -> RunReport:
    """The run's report, assembled from the stages' sections (a run in memory has no export, latency or
    sizes)."""
    c, x = s.recipe.compress, s.exported
    onnx, load_forms = (x.onnx, x.load_forms) if x is not None else (None, None)
    why = [d.why_no_speedup(speedup_hint(d, c.rank_multiple, c.deploy_target) if d.runtime == "onnxruntime" else "")
           for d in (onnx.forms if onnx else None, load_forms) if d is not None and d.models]
    warnings = (s.latency.slower_than_original() if s.latency else []) + [w for w in why if w] + \
               ([e.describe() for e in s.distilled.events] if s.distilled else []) + \
               ([s.distilled.reverted] if s.distilled and s.distilled.reverted else [])
    rows = layer_rows(s.choices, s.plans, s.decomposed, onnx, s.refitted, load_forms, s.replaced)
    return build_report(recipe=s.recipe, loaded=s.loaded, original=s.loaded.model, compressed=s.student, rows=rows,
                        accuracy=s.accuracy, warnings=warnings, seconds={**clock.seconds, "total": clock.total()},
                        cpu_seconds={**clock.cpu_seconds, "total": clock.total_cpu()}, plans=plan_cache.chosen(),
                        stages=s.points, calibration=s.pool.describe() if s.pool is not None else None,
                        distillation=s.distilled, onnx=onnx, load_forms=load_forms, latency=s.latency,
                        spectral=s.spectral, bqn=s.bqn, sizes=x.sizes if x else None, int8=x.int8 if x else None)


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
