"""What every command shares: the common options, logging, error handling and output (stdout vs stderr)."""

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
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from tnncompress import progress
from tnncompress.errors import TnncompressError, UsageError
from tnncompress.escape import LIMIT, terminal
from tnncompress.export.artifacts import load as load_output
from tnncompress.export.artifacts import read_structure
from tnncompress.export.structure import input_size as structure_input_size
from tnncompress.io import load_model
from tnncompress.io.load import parse_input_size
from tnncompress.pipeline import OPTIONS
from tnncompress.schema import to_data

from .options import annotation


class SafeConsole(Console):
    """A console whose every string is made safe for a terminal first (escape.terminal): a layer name or a
    checkpoint's metadata holding ESC[2J, a carriage return or a bidi override is shown, not obeyed."""

    def render_str(self, text: str, **kwargs) -> Text:
        return super().render_str(terminal(text, limit=1 << 30), **kwargs)


class SafeRichHandler(RichHandler):
    """Log records made safe for a terminal the same way (RichHandler builds its Text without render_str)."""

    def render_message(self, record: logging.LogRecord, message: str):
        return super().render_message(record, terminal(message, limit=1 << 30))


# markup=False: paths, layer names and error messages are user text, and "[/x]" in a path must print as
# itself, not be parsed (or fail to parse) as rich markup. Styling goes through Text objects.
out = SafeConsole(width=None if sys.stdout.isatty() else 160, markup=False)  # results; wide tables when piped
err = SafeConsole(stderr=True, soft_wrap=True, markup=False)  # progress, logs, errors: one message, one line
log = logging.getLogger("tnncompress")
MESSAGE_LIMIT = LIMIT  # characters of an error message printed

# How the command line names options in messages: the declared options' flags, and the run's own.
FLAGS = {o.flat: o.flag for o in OPTIONS.options} | {f"no_{o.flat}": f"--no-{o.flag[2:]}" for o in OPTIONS.options} | {
    "force": "--force", "resume": "--resume", "set": "--set", "recipe": "--recipe"}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (logs stay on stderr).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Errors only: no progress, no warnings.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Log what each stage does (-v), and details (-vv).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
# the other commands take these options of `run` as `run` declares them
SeedOpt, ArchOpt, TrustOpt, InputSizeOpt, DeviceOpt, BatchSizeOpt = (
    annotation(OPTIONS.lookup(k)) for k in ("seed", "arch", "trust_checkpoint", "input_size", "device", "batch_size"))


@dataclass
class Session:
    json: bool
    quiet: bool
    verbose: int
    debug: bool
    seed: int

    def result(self, payload: object, render: Callable[[], None]) -> None:
        """Emit the command's result: JSON on stdout, or the human rendering."""
        if self.json:
            sys.stdout.write(json.dumps(to_data(payload), indent=2, default=str) + "\n")
        elif not self.quiet:
            render()


def start(json_: bool, quiet: bool, verbose: int, debug: bool, seed: int) -> Session:
    """Logging (warnings by default, -v info, -vv debug, -q errors only), progress and seeds."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if not any(isinstance(h, RichHandler) for h in log.handlers):
        log.addHandler(SafeRichHandler(console=err, show_time=False, show_path=False, markup=False,
                                   rich_tracebacks=False))
    log.setLevel(level)
    log.propagate = False
    progress.set_enabled(False if (quiet or json_) else None)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return Session(json_, quiet, verbose, debug, seed)


def labelled(label: str, style: str, message: str) -> Text:
    """"label: message" with the label styled and the message printed as it is, on one line."""
    return Text.assemble((label, style), " ", one_line(message))


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """The message on one line, bounded, with no control character left in it."""
    return terminal(" ".join(str(message).split()), limit)


def cli_message(exc: TnncompressError) -> str:
    """The error as the command line words it: option references as flags."""
    return exc.render(lambda key: FLAGS.get(key, key))


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
            err.print(labelled("error:", "bold red", cli_message(exc)), highlight=False)
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


def load_model_or_output(path: str, arch, trust: bool, input_size, form: str = "factors"):
    """(model, input size, what it is) for a checkpoint or a `tnncompress run` output directory (its
    layers in `form`, as tnncompress.load takes it)."""
    if Path(path).is_dir():
        model = load_output(path, trust_code=trust, form=form)
        structure = read_structure(path)
        size = parse_input_size(input_size) if isinstance(input_size, str) else input_size
        size = size or (structure_input_size(structure["input_size"], str(Path(path) / "structure.json"))
                        if "input_size" in structure else ())
        if len(size) != 3:
            raise UsageError(f"{path}: no input size recorded; give --input-size C,H,W")
        return model, tuple(size), {"output_dir": str(path), "arch": structure.get("arch")}
    loaded = load_model(path, arch=arch, trust=trust, input_size=input_size)
    return loaded.model, loaded.input_size, to_data(loaded.describe())
