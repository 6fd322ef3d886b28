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


class _TrainingBars:
    """One bar per training phase: step M/N, the running loss, images/s, elapsed time and ETA."""

    def __init__(self, progress: Progress | None):
        self.progress = progress

    def task(self, description: str, total: int, batch_size: int, completed: int = 0
             ) -> Callable[[int, float], None]:
        if self.progress is None:
            return lambda n=1, loss=0.0: None
        progress = self.progress
        task = progress.add_task(description, total=total, completed=completed, loss=float("nan"), rate=0.0)
        state = {"loss": None, "start": None, "done": 0, "completed": completed}

        def advance(n: int = 1, loss: float = 0.0) -> None:
            import time

            now = time.perf_counter()
            if state["start"] is None:
                state["start"] = now
            else:
                state["done"] += n
            state["loss"] = loss if state["loss"] is None else 0.9 * state["loss"] + 0.1 * loss
            rate = state["done"] * batch_size / max(now - state["start"], 1e-9)
            progress.update(task, advance=n, loss=state["loss"], rate=rate)
            state["completed"] += n
            if state["completed"] >= total:
                progress.remove_task(task)
        return advance


@contextlib.contextmanager
def training_progress(enabled: bool = True) -> Iterator[_TrainingBars]:
    if not (enabled and _enabled):
        yield _TrainingBars(None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TextColumn("{task.fields[rate]:.0f} img/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console, transient=True) as progress:
        yield _TrainingBars(progress)
