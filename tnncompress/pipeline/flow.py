"""The stages of a run as data: each a name (its line in the report's seconds), a condition on the
recipe and what came before, and a function of the run's state. `run.py` and `memory.py` loop over
these lists, timing each stage and recording the accuracy after the ones that mark the curve; a stage
package's own `stage.py` does the work, told by its options section.

SHARED runs in every process under torchrun (up to and including learning, which they share); MAIN on
rank 0 only, after the processes part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..bayes import stage as bqn_stage
from ..bayes.result import BqnReport
from ..calibrate import CalibrationPool, parse_memory
from ..compress import stage as compress_stage
from ..compress.select import Selection
from ..data import ClassificationData
from ..distill import DistillResult, KdData, distil
from ..evaluate import stage as evaluate_stage
from ..io import LoadedModel
from ..report import Accuracy, Latency, StageRecord
from ..spectral import stage as spectral_stage
from ..spectral.control import SpectralControl
from ..spectral.replace import densify
from ..spectral.result import SpectralReport
from ..timing import Stopwatch
from ..train import Context
from . import stages
from .recipe import Recipe


@dataclass
class RunState:
    """What the stages leave for the ones after them and for the report."""

    recipe: Recipe
    loaded: LoadedModel
    test: ClassificationData | None
    train: ClassificationData | None
    pool: CalibrationPool | None
    ctx: Context  # the process group and device, the seed, the checkpoints and whether to resume
    output: Path | None = None  # where the files are written (None: a run in memory)
    student: nn.Module | None = None
    choices: list = field(default_factory=list)
    plans: list = field(default_factory=list)
    decomposed: list = field(default_factory=list)
    refitted: list = field(default_factory=list)
    replaced: list = field(default_factory=list)
    points: list[StageRecord] = field(default_factory=list)  # each stage before distillation, with its accuracy
    control: SpectralControl | None = None
    spectral: SpectralReport | None = None
    distilled: DistillResult | None = None
    learned: bqn_stage.Learned | None = None
    bqn: BqnReport | None = None
    codes: dict | None = None  # the BQN's integer codes, to export
    accuracy: Accuracy | None = None
    exported: stages.Exported | None = None
    latency: Latency | None = None


def run_context(recipe: Recipe, ctx: Context, checkpoints: Path | None, resume: bool) -> Context:
    """The process's context with what the recipe says about seeds, loaders and memory."""
    return dataclasses.replace(ctx, seed=recipe.seed, workers=recipe.data.workers, checkpoints=checkpoints,
                               resume=resume, cache_memory=parse_memory(recipe.calibrate.cache_memory))


def _always(_s: RunState) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunState], None]
    when: Callable[[RunState], bool] = _always
    point: bool = False  # the accuracy after it joins the curve of the stages before distillation


def _plan(s: RunState) -> None:
    c, teacher, size = s.recipe.compress, s.loaded.model, s.loaded.input_size
    if s.recipe.spectral.orthogonal:  # selected convolutions become orthogonal, not factorised
        s.choices = compress_stage.select(c, teacher, size)
    else:
        s.choices, s.plans = compress_stage.plan(c, teacher, size, s.pool, s.ctx, s.recipe.export.deploy_batch)


def _orthogonalise(s: RunState) -> None:
    names = [c.info.name for c in s.choices if c.status == Selection.COMPRESS]
    s.student, s.replaced = spectral_stage.orthogonal(s.loaded.model, names, s.loaded.input_size, s.ctx.seed)


def _layer_decomp(s: RunState) -> None:
    s.student, s.decomposed = compress_stage.decompose(s.recipe.compress, s.loaded.model, s.plans, s.ctx)


def _data_aware(s: RunState) -> None:
    s.refitted = compress_stage.refit(s.recipe.compress, s.loaded.model, s.student, s.pool, s.loaded.input_size,
                                      s.ctx)


def _recalibrate(s: RunState) -> None:
    compress_stage.recalibrate(s.student, s.pool, s.refitted, s.loaded.input_size)


def _spectral_start(s: RunState) -> None:
    replaced = [r.name for r in s.replaced if r.replaced]
    s.control, s.spectral = spectral_stage.start(s.recipe.spectral, s.loaded.model, s.student, s.loaded.input_size,
                                                 replaced)


def _distill(s: RunState) -> None:
    before = s.points[-1] if s.points else None
    start = (before.top1, before.samples) if before is not None and before.top1 is not None else None
    data = KdData(s.train, s.test, s.loaded.input_size, s.pool)
    s.distilled = distil(s.loaded.model, s.student, data, s.recipe.distill, s.ctx, start, s.control)
    s.loaded.model.cpu(), s.student.cpu()


def _spectral_end(s: RunState) -> None:
    densify(s.student)  # orthogonal convolutions as the plain ones they compute, from here on
    if s.control is not None:
        s.spectral = spectral_stage.end(s.recipe.spectral, s.student, s.loaded.input_size, s.control, s.spectral)


def _bqn_learn(s: RunState) -> None:
    teacher = s.loaded.model
    s.learned = bqn_stage.learn(s.recipe.bqn, teacher, s.student, s.train, s.pool, s.ctx)


def _bqn_finish(s: RunState) -> None:
    s.bqn, s.codes, s.student = bqn_stage.finish(s.recipe.bqn, s.learned, s.test, s.recipe.evaluate, s.ctx)
    s.loaded.model.cpu()


def _evaluate(s: RunState) -> None:
    s.accuracy = evaluate_stage.accuracy(s.recipe.evaluate, s.loaded.model, s.student, s.test, s.ctx.device,
                                         s.points[0].top1)


def _export(s: RunState) -> None:
    s.exported = stages.export(s.recipe, s.output, s.loaded, s.student, s.codes, s.pool, s.test, s.ctx)


def _latency(s: RunState) -> None:
    s.latency = stages.latency(s.recipe, s.output, s.loaded, s.exported)


SHARED = [
    Stage("plan", _plan),
    Stage("orthogonalise", _orthogonalise, lambda s: s.recipe.spectral.orthogonal, point=True),
    Stage("layer_decomp", _layer_decomp, lambda s: not s.recipe.spectral.orthogonal, point=True),
    Stage("data_aware", _data_aware, lambda s: (s.pool is not None and stages.data_aware(s.recipe)
                                                and not s.recipe.spectral.orthogonal), point=True),
    Stage("recalibrate_bn", _recalibrate, lambda s: s.pool is not None and s.recipe.calibrate.recalibrate_bn,
          point=True),
    Stage("spectral", _spectral_start),
    Stage("distill", _distill, lambda s: s.recipe.distill.enabled),
    Stage("spectral", _spectral_end),
    Stage("bqn", _bqn_learn, lambda s: s.recipe.bqn.enabled),  # every process learns; rank 0 evaluates
]
MAIN = [
    Stage("bqn", _bqn_finish, lambda s: s.learned is not None),
    Stage("evaluate", _evaluate),
    Stage("export", _export, lambda s: s.output is not None),
    Stage("latency", _latency, lambda s: s.output is not None and s.recipe.report.latency),
]


def run_stages(state: RunState, pipeline: list[Stage], clock: Stopwatch) -> None:
    """Each stage whose condition holds, timed, with the accuracy after it where it marks the curve."""
    for stage in pipeline:
        if not stage.when(state):
            continue
        with clock.stage(stage.name):
            stage.run(state)
        if stage.point:
            record = StageRecord(stage.name, clock.seconds.get(stage.name, 0.0), clock.cpu_seconds.get(stage.name, 0.0))
            test = state.test if state.ctx.main else None
            state.points.append(evaluate_stage.point(record, state.student, test, state.recipe.evaluate.plan,
                                                     state.recipe.distill.eval_limit, state.ctx.device))
