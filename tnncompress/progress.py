"""Progress bars on stderr, shared by every long stage.

One switch: `set_enabled`. The command line turns bars off under `--quiet` and `--json`; a library
caller gets them when stderr is a terminal. `suppressed()` silences them for a block (an evaluation
inside a training phase, whose bar is already on screen: rich draws one live display at a time).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .escape import terminal

stderr_console = Console(stderr=True)
_enabled: bool | None = None  # None: on when stderr is a terminal
_suppressed = 0


def set_enabled(enabled: bool | None) -> None:
    """True or False, or None for the default (on when stderr is a terminal)."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    if _suppressed:
        return False
    return sys.stderr.isatty() if _enabled is None else _enabled


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    global _suppressed
    _suppressed += 1
    try:
        yield
    finally:
        _suppressed -= 1


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` function; draws a bar only when progress is enabled."""
    if not enabled():
        yield lambda n=1: None
        return
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console, transient=True) as progress, suppressed():
        task = progress.add_task(terminal(description), total=total)
        yield lambda n=1: progress.advance(task, n)


class TrainingBars:
    """One bar per training phase: step M/N, the running loss, images/s, elapsed time and ETA."""

    def __init__(self, progress: Progress | None):
        self.progress = progress

    def task(self, description: str, total: int, batch_size: int, completed: int = 0
             ) -> Callable[[int, float], None]:
        if self.progress is None:
            return lambda n=1, loss=0.0: None
        progress = self.progress
        task = progress.add_task(terminal(description), total=total, completed=completed, loss=float("nan"), rate=0.0)
        state = {"loss": None, "start": None, "done": 0, "completed": completed}

        def advance(n: int = 1, loss: float = 0.0) -> None:
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
def training_progress() -> Iterator[TrainingBars]:
    if not enabled():
        yield TrainingBars(None)
        return
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TextColumn("{task.fields[rate]:.0f} img/s"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr_console, transient=True) as progress, suppressed():
        yield TrainingBars(progress)
