"""`tnncompress batch`: many compressions from recipe files, folders and sweeps, with gates and CI summaries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tnncompress.batch import GATE_EXIT_CODE, collect, counts, run_batch, summary_writer
from tnncompress.batch.runner import Outcome
from tnncompress.batch.summary import SUMMARY_FILES, SUMMARY_MD
from tnncompress.errors import UsageError

from .common import DebugOpt, JsonOpt, QuietOpt, VerboseOpt, err, handle_errors, labelled, out, start

EXAMPLES = """Examples:

  tnncompress batch recipes/ci/                       # every *.yaml in the folder, into batch-out/NAME/

  tnncompress batch base.yaml --sweep format=cp,tk,mcp --sweep rate=0.1,0.05 -o sweep/   # 6 runs

  tnncompress batch recipes/ci/ --gate max_accuracy_drop=2 --gate min_speedup=1.2@onnxruntime_cpu:1

  tnncompress batch a.yaml b.yaml --set distill.steps=100 --fail-fast

Each run writes OUT/NAME/ (NAME: the recipe's file name, plus the swept values). A run whose OUT/NAME/
was completed by this version from the same options and input files, every artifact unchanged since
(its manifest.json), is not repeated: its parameter counts are recomputed from the files and its gates
judged again. Anything else runs again; an interrupted distillation is resumed. OUT/ gets summary.json,
summary.md (a GitHub job summary), junit.xml (one test case per run) and summary.html, written when the
batch starts and kept true after every run and at every exit (runs not done are "not run", never passed).

Gates (in a recipe's `gates:` section or --gate NAME=VALUE): max_accuracy_drop (top-1 points),
max_rate (parameters compressed / original), min_speedup (SPEEDUP@RUNTIME:BATCH), max_onnx_error,
max_size_ratio, max_int8_accuracy_drop, max_int8_size_ratio.

Exit codes: 0 every run passed, 4 a run missed a gate (and none failed), 1 a run failed, 2 bad input
(nothing runs: every recipe is checked first), 130 interrupted (rerun the same command to continue).
"""


@handle_errors
def batch(
    recipes: Annotated[list[str], typer.Argument(help="Recipe files, or folders of *.yaml recipes.",
                                                 metavar="RECIPE|FOLDER...")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where the runs' directories and the summaries go.",
                                          metavar="DIR")] = Path("batch-out"),
    sweep: Annotated[list[str] | None, typer.Option(
        "--sweep", help="KEY=V1,V2: one run per value (repeat for a grid); KEY is any recipe key.")] = None,
    gate: Annotated[list[str] | None, typer.Option("--gate", help="NAME=VALUE: a gate every run must pass.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Set an option of every run: key=value.")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first run that fails or misses "
                                                                "a gate.")] = False,
    json: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = 0, debug: DebugOpt = False,
) -> None:
    """Run many compressions (recipes, folders, sweeps); write summary.json/.md/.html and junit.xml."""
    session = start(json, quiet, verbose, debug, 0)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    jobs = collect(recipes, out_dir, sweep or [], gate or [], set_ or [])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out_dir}: cannot create it ({exc.strerror})") from None
    if not quiet:
        err.print(f"{len(jobs)} runs into {out_dir}/: {', '.join(j.name for j in jobs)}")

    def report(o: Outcome) -> None:
        if quiet:
            return
        how = " (reused)" if o.reused else " (resumed)" if o.resumed else \
            f" (run again: {o.not_reused})" if o.not_reused else ""
        style = {"passed": "bold green", "failed": "bold yellow", "error": "bold red"}[o.status]
        err.print(labelled(f"{o.status}:", style, f"{o.name}{how} in {o.seconds:.1f} s"
                           + (f": {o.message}" if o.message else "")), highlight=False)

    record = summary_writer(out_dir, jobs, " ".join(["tnncompress", *sys.argv[1:]]))
    outcomes = run_batch(jobs, fail_fast=fail_fast, on_outcome=report, record=record)
    not_run = [j.name for j in jobs[len(outcomes):]]
    files = [out_dir / name for name in SUMMARY_FILES]
    c = counts(outcomes)
    session.result({**c, "not_run": not_run, "summary": [str(f) for f in files], "runs": outcomes},
                   lambda: out.print(f"{c['total']} runs: {c['passed']} passed, {c['failed']} missed a gate, "
                                     f"{c['errors']} errors; summary in {out_dir / SUMMARY_MD}"))
    if c["errors"]:
        raise typer.Exit(1)
    if c["failed"]:
        raise typer.Exit(GATE_EXIT_CODE)
