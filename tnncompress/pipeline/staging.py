"""Atomic output directories: everything is written to a hidden sibling directory, which replaces the
destination in one rename only once the run has succeeded. A failed or interrupted run leaves the
destination as it was (absent, or the previous result under --force).

A resumable run (one with distillation checkpoints) stages in `.NAME.partial`, a name that does not
depend on the process, and keeps it when it fails, so that `--resume` can continue from it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError


def check_destination(final: Path, force: bool) -> None:
    if final.exists() and not force:
        raise UsageError(f"output directory {final} exists; pass --force to replace it, or choose --out")
    if final.exists() and not final.is_dir():
        raise UsageError(f"output path {final} exists and is not a directory")


def staging_path(final: Path, resumable: bool = False) -> Path:
    return final.parent / (f".{final.name}.partial" if resumable else f".{final.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False, resumable: bool = False, resume: bool = False
                     ) -> Iterator[Path]:
    check_destination(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(final, resumable)
    if resumable and staging.exists() and not (resume or force):
        raise UsageError(f"an interrupted run is kept in {staging}: pass --resume to continue it, "
                         "or --force to start over")
    if not (resumable and resume):
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(exist_ok=True)
    try:
        yield staging
    except BaseException:
        if not resumable:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    check_destination(final, force)  # it may have appeared meanwhile
    if final.exists():
        previous = final.parent / f".{final.name}.previous-{os.getpid()}"
        final.rename(previous)
        staging.rename(final)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        staging.rename(final)
