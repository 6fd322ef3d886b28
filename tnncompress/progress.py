"""Progress bars on stderr, shared by every long stage; silent when disabled or under --quiet/--json."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

stderr_console = Console(stderr=True)
_enabled = os.environ.get("TNNCOMPRESS_PROGRESS", "1") != "0"


def set_progress_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` function; draws a bar only when progress is enabled globally and here."""
    if not (enabled and _enabled):
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=stderr_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
