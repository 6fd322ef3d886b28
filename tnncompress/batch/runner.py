"""Running a batch: each job into its own directory, reusing what a previous batch completed, resuming what
it left half done, and going on after a failure (unless told to stop)."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TnncompressError
from ..pipeline.recipe import Recipe, read_recipe
from ..pipeline.run import RECIPE_FILE, comparable, run
from ..pipeline.staging import looks_like_output, workspace
from ..report import read_report
from ..report.gates import GateResult, judge, missed
from .jobs import Job

log = logging.getLogger(__name__)
STATUSES = ("passed", "failed", "error")  # failed: a gate missed; error: the run did not complete


@dataclass
class Outcome:
    name: str
    source: str
    sweep: dict[str, object]
    directory: str
    status: str  # one of STATUSES
    reused: bool = False  # the completed run of an earlier batch, re-judged against the gates, not rerun
    resumed: bool = False  # continued from a kept distillation
    seconds: float = 0.0
    message: str | None = None  # why it failed or errored, one line
    detail: str | None = None  # for an error: the traceback
    gates: list[GateResult] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # the headline numbers of its report


def run_batch(jobs: list[Job], fail_fast: bool = False,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Each job in order; the outcomes of those that ran (all of them unless `fail_fast` stopped early)."""
    outcomes = []
    for job in jobs:
        outcome = run_job(job)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
        if fail_fast and outcome.status != "passed":
            break
    return outcomes


def completed(job: Job) -> bool:
    """A previous batch wrote this job's output from the same resolved recipe (gates and other execution
    options aside: they do not change what is computed)."""
    out = Path(job.recipe.out)
    if not (looks_like_output(out) and (out / RECIPE_FILE).is_file() and (out / "report.json").is_file()):
        return False
    return _same(out / RECIPE_FILE, job.recipe)


def run_job(job: Job) -> Outcome:
    out = Path(job.recipe.out)
    outcome = Outcome(job.name, job.source, job.sweep, str(out), "passed")
    start = time.perf_counter()
    try:
        if completed(job):
            outcome.reused = True
            report = read_report(out / "report.json")
            report.gates = judge(job.recipe.gates, report)
        else:
            ws = workspace(out.absolute())
            outcome.resumed = ws.kept_state() and ws.recipe.is_file() and _same(ws.recipe, job.recipe)
            # the directory is the batch's own: a stale result or state of another recipe is replaced
            report = run(job.recipe, force=True, resume=outcome.resumed).report
    except TnncompressError as exc:
        outcome.status, outcome.message = "error", " ".join(str(exc).split())
    except Exception as exc:  # a bug, or a failure a run does not foresee: recorded, and the batch goes on
        outcome.status, outcome.message = "error", f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"
        outcome.detail = traceback.format_exc()
    else:
        outcome.gates = report.gates
        outcome.metrics = metrics(report)
        if missed(report.gates):
            outcome.status = "failed"
            outcome.message = "; ".join(g.describe() for g in missed(report.gates))
    outcome.seconds = time.perf_counter() - start
    return outcome


def metrics(report) -> dict:
    """What a summary row shows of a run."""
    acc = report.accuracy
    row = {"format": report.format, "target_rate": report.target_rate, "rate": report.params.rate,
           "params": report.params.compressed, "params_original": report.params.original,
           "flops_ratio": report.flops.ratio, "top1_original": acc.original.top1 if acc.original else None,
           "top1": acc.compressed.top1 if acc.compressed else None, "samples": acc.samples,
           "onnx_error": report.onnx.check.max_abs_error if report.onnx else None,
           "seconds": report.seconds.get("total")}
    if report.latency:
        row["speedup"] = {f"{runtime}:{batch}": e.speedup for runtime, batch, e in report.latency.rows()}
        row["latency_ms"] = {f"{runtime}:{batch}": e.compressed_ms for runtime, batch, e in report.latency.rows()}
    return row


def _same(recipe_file: Path, recipe: Recipe) -> bool:
    try:
        before = Recipe.from_values(read_recipe(recipe_file))
    except TnncompressError:  # written by another version, or damaged: not the same
        return False
    return comparable(before) == comparable(recipe)
