"""Atomic output directories: everything is written to a hidden sibling directory, which replaces the
destination in one rename only once the run has succeeded. A failed or interrupted run leaves the
destination as it was (absent, or the previous result under --force)."""

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


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False) -> Iterator[Path]:
    check_destination(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
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
