"""Running a batch: each job into its own directory, reusing what a previous batch completed (when its
manifest still vouches for it), resuming what it left half done, and going on after a failure (unless
told to stop).

Reuse trusts nothing it can check: the output's manifest.json must record the same tnncompress version,
the same options (all that change an artifact or a measured figure), the same input files, and every
artifact unchanged (pipeline/manifest.py); the parameter counts and the rate a gate reads are then
recomputed from the checkpoint and the weights, not read from report.json. Anything else reruns the job.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..errors import TnncompressError
from ..escape import LIMIT, bounded
from ..export.artifacts import load as load_output
from ..io import load_model
from ..io.arch import parse_arch
from ..pipeline.manifest import reuse_refusal
from ..pipeline.recipe import Recipe, read_recipe
from ..pipeline.run import comparable, run
from ..pipeline.staging import looks_like_output, workspace
from ..report import read_report
from ..report.gates import GateResult, judge, missed
from ..report.model import Params, RunReport
from ..report.write import write_pages
from .jobs import Job

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # a gate missed
    ERROR = "error"  # the run did not complete


DETAIL_LIMIT = 8 * LIMIT  # characters of a traceback kept (its end: where it failed)


@dataclass
class Headline:
    """The headline numbers of a run's report (summary.json's `metrics`; None where the run has none)."""

    format: str | None = None
    target_rate: float | None = None
    rate: float | None = None
    params: int | None = None
    params_original: int | None = None
    flops_ratio: float | None = None
    top1_original: float | None = None
    top1: float | None = None
    samples: int | None = None
    onnx_error: float | None = None
    seconds: float | None = None
    speedup: dict[str, float] | None = None  # per "runtime:batch", with latency measured
    latency_ms: dict[str, float] | None = None


@dataclass
class Outcome:
    name: str
    source: str
    sweep: dict[str, object]
    directory: str
    status: JobStatus
    reused: bool = False  # the completed run of an earlier batch, verified and re-judged against the gates
    resumed: bool = False  # continued from a kept distillation
    not_reused: str | None = None  # why an earlier batch's output was run again, when there was one
    seconds: float = 0.0
    message: str | None = None  # why it failed or errored, one line
    detail: str | None = None  # for an error: the traceback
    gates: list[GateResult] = field(default_factory=list)
    metrics: Headline = field(default_factory=lambda: Headline())  # the headline numbers of its report


Record = Callable[[list[Outcome], str], None]


def run_batch(jobs: list[Job], fail_fast: bool = False, on_outcome: Callable[[Outcome], None] | None = None,
              record: Record | None = None) -> list[Outcome]:
    """Each job in order; the outcomes of those that ran (all of them unless `fail_fast` stopped early).
    `record(outcomes, state)` is called before the first job ("running"), after each, and at every exit
    ("finished", or "interrupted" when the batch itself stops on a signal or an error)."""
    outcomes: list[Outcome] = []
    state = "interrupted"
    if record is not None:
        record(outcomes, "running")
    try:
        for job in jobs:
            outcome = run_job(job)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            if fail_fast and outcome.status != JobStatus.PASSED:
                break
            if record is not None and len(outcomes) < len(jobs):
                record(outcomes, "running")
        state = "finished"
    finally:
        if record is not None:
            record(outcomes, state)
    return outcomes


def reuse(job: Job) -> tuple[object | None, str | None]:
    """(the report of an earlier completed run of this job, verified, with recomputed parameter counts;
    None) or (None, why it cannot be reused; None when there is no earlier output at all)."""
    out = Path(job.recipe.out)
    if not looks_like_output(out):
        return None, None
    why = reuse_refusal(out, job.recipe)
    if why is not None:
        return None, why
    try:
        report = read_report(out / "report.json")
        report.params = recount(job.recipe, out, report.params)
        if report.sizes is not None:  # the artifacts' sizes are the files' (verified by the manifest), not the report's
            report.sizes.artifacts = {name: (out / name).stat().st_size for name in report.sizes.artifacts}
        report.gates = judge(job.recipe.gates, report)
        write_pages(out, report)  # what a reader opens shows the verified, recounted report
    except (TnncompressError, OSError) as exc:
        return None, f"its artifacts cannot be read back ({bounded(' '.join(str(exc).split()), 200)})"
    return report, None


def recount(recipe: Recipe, out: Path, recorded: Params) -> Params:
    """The model's parameter counts and rate, from the checkpoint and the output's weights."""
    trusted = recipe.model.trust_checkpoint or (recipe.model.arch is not None
                                                and parse_arch(recipe.model.arch).source == "python")
    original = sum(p.numel() for p in load_model(recipe.model.checkpoint, arch=recipe.model.arch, trust=trusted,
                                                 input_size=recipe.model.input_size).model.parameters())
    compressed = sum(p.numel() for p in load_output(out, trust_code=trusted, form="factors").parameters())
    if (original, compressed) != (recorded.original, recorded.compressed):
        log.warning("%s: report.json says %d -> %d parameters, the files hold %d -> %d; judging the files", out,
                    recorded.original, recorded.compressed, original, compressed)
    return Params(original, compressed, compressed / original, recorded.compressible_original,
                  recorded.compressible_compressed, recorded.compressible_rate)


def run_job(job: Job) -> Outcome:
    out = Path(job.recipe.out)
    outcome = Outcome(job.name, job.source, job.sweep, str(out), JobStatus.PASSED)
    start = time.perf_counter()
    try:
        report, outcome.not_reused = reuse(job)
        if report is not None:
            outcome.reused = True
        else:
            if outcome.not_reused:
                log.info("%s: running again: %s", job.name, outcome.not_reused)
            ws = workspace(out.absolute())
            outcome.resumed = ws.kept_state() and ws.recipe.is_file() and _same(ws.recipe, job.recipe)
            # the directory is the batch's own: a stale result or state of another recipe is replaced
            report = run(job.recipe, force=True, resume=outcome.resumed).report
    except TnncompressError as exc:
        outcome.status, outcome.message = JobStatus.ERROR, bounded(" ".join(str(exc).split()))
    except Exception as exc:  # a bug, or a failure a run does not foresee: recorded, and the batch goes on
        outcome.status = JobStatus.ERROR
        outcome.message = bounded(f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}")
        detail = traceback.format_exc()
        outcome.detail = detail if len(detail) <= DETAIL_LIMIT else f"... ({len(detail):,} characters; the end:)\n" \
            + detail[-DETAIL_LIMIT:]
    else:
        outcome.gates = report.gates
        outcome.metrics = metrics(report)
        if missed(report.gates):
            outcome.status = JobStatus.FAILED
            outcome.message = bounded("; ".join(g.describe() for g in missed(report.gates)))
    outcome.seconds = time.perf_counter() - start
    return outcome


def metrics(report: RunReport) -> Headline:
    """What a summary row shows of a run, read from its typed report."""
    acc = report.accuracy
    row = Headline(report.format, report.target_rate, report.params.rate, report.params.compressed,
                   report.params.original, report.flops.ratio, acc.original.top1 if acc.original else None,
                   acc.compressed.top1 if acc.compressed else None, acc.samples,
                   report.onnx.check.max_abs_error if report.onnx else None, report.seconds.get("total"))
    if report.latency:
        row.speedup = {f"{runtime}:{batch}": e.speedup for runtime, batch, e in report.latency.rows()}
        row.latency_ms = {f"{runtime}:{batch}": e.compressed_ms for runtime, batch, e in report.latency.rows()}
    return row


def _same(recipe_file: Path, recipe: Recipe) -> bool:
    try:
        before = Recipe.from_values(read_recipe(recipe_file))
    except TnncompressError:  # written by another version, or damaged: not the same
        return False
    return comparable(before) == comparable(recipe)
