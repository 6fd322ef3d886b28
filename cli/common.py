"""What every command shares: the common options, error handling and output (stdout vs stderr)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from tnncompress.errors import TnncompressError
from tnncompress.progress import set_progress_enabled

# markup=False: paths, layer names and error messages are user text, and "[/x]" in a path must print as
# itself, not be parsed (or fail to parse) as rich markup. Styling goes through Text objects.
out = Console(width=None if sys.stdout.isatty() else 160, markup=False)  # results; wide tables when piped
err = Console(stderr=True, soft_wrap=True, markup=False)  # progress, logs, errors: one message, one line
MESSAGE_LIMIT = 2000  # characters of an error message printed
log = logging.getLogger("tnncompress")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (logs stay on stderr).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Errors only: no progress, no logs.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-v info, -vv debug).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for Python, NumPy and PyTorch.")]
ArchOpt = Annotated[str | None, typer.Option(
    "--arch", help="torchvision:NAME, tnncompress:NAME or package.module:factory (default: detect).")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-checkpoint", help="Allow unpickling a whole nn.Module (runs code from the file).")]
InputSizeOpt = Annotated[str | None, typer.Option(
    "--input-size", help="Input size C,H,W (default: the data's, the checkpoint's, or the architecture's).")]


@dataclass
class Session:
    json: bool
    quiet: bool
    verbose: int
    debug: bool
    seed: int

    def result(self, payload: dict, render: Callable[[], None]) -> None:
        """Emit the command's result: JSON on stdout, or the human rendering."""
        if self.json:
            sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        elif not self.quiet:
            render()


def start(json_: bool, quiet: bool, verbose: int, debug: bool, seed: int) -> Session:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if not quiet and not log.handlers:
        from rich.logging import RichHandler

        log.addHandler(RichHandler(console=err, show_time=False, show_path=False))
    log.setLevel(level)
    set_progress_enabled(not (quiet or json_))
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    import torch

    torch.manual_seed(seed)
    return Session(json_, quiet, verbose, debug, seed)


def say(session: Session, message: str) -> None:
    """An informative line on stderr, unless --quiet."""
    if not session.quiet:
        err.print(message, highlight=False)


def labelled(label: str, style: str, message: str) -> Text:
    """"label: message" with the label styled and the message printed as it is, on one line."""
    return Text.assemble((label, style), " ", one_line(message))


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into Interrupted for the duration of a command (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into a one-line message and their exit code; tracebacks only under --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            with interrupts():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TnncompressError as exc:
            if debug:
                raise
            err.print(labelled("error:", "bold red", str(exc)), highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except Interrupted as exc:
            err.print(f"interrupted ({exc})")
            raise typer.Exit(128 + exc.signum) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if debug:
                raise
            err.print(labelled("error:", "bold red", f"unexpected {type(exc).__name__}: {exc} "
                               "(rerun with --debug for the traceback)"), highlight=False)
            raise typer.Exit(1) from None

    return wrapper
