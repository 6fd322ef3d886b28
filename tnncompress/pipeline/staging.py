"""Output directories that appear whole or not at all, one writer at a time, and never at the cost of
what the user had.

For `--out DIR` a run uses, next to DIR:

    .DIR.lock           held (flock) while the run writes DIR; it names the holder's PID, host and start.
                        The kernel drops the lock when its process dies, so a lock file left behind by a
                        killed run is stale by construction and is simply taken over.
    .DIR.partial/       the staging directory
        output/         becomes DIR, in one rename, once the run has succeeded
        checkpoints/    distillation state; outlives a failure, so `--resume` continues from it, and is
                        removed only after DIR is in place
        recipe.yaml     a resumable run's options (a resumed run must compute what it would have)

A failed non-resumable run removes its staging directory; a resumable one keeps it and says so. The
destination is refused, before any work, when it exists (without `--force`), when it holds an input
of the run or the current directory, when `--force` would replace a directory that is not a
tnncompress output, and when it cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import TnncompressError, UsageError, opt
from ..io import inside

MARKERS = ("report.json", "structure.json")  # what a tnncompress output directory holds
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    final: Path  # the destination, absolute
    root: Path  # the staging directory

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    def kept_state(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())


def destination(out: str | Path) -> Path:
    """`out` made absolute (without resolving links: DIR itself is what gets replaced), so that `.`
    and `..` have a name and a parent."""
    return Path(os.path.abspath(os.path.expanduser(str(out))))


def workspace(final: Path) -> Workspace:
    return Workspace(final, final.parent / f".{final.name}.partial")


def looks_like_output(directory: Path) -> bool:
    return any((directory / m).is_file() for m in MARKERS)


def check_destination(final: Path, force: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse a destination the run must not write; see the module docstring."""
    for path in inputs:
        if path and os.path.exists(path) and inside(path, final):
            raise UsageError(f"output directory {final} holds {path}, an input of this run; "
                             f"choose another {opt('out')} ({opt('force')} would delete it)")
    if inside(os.getcwd(), final):
        raise UsageError(f"output directory {final} holds the current directory; choose another {opt('out')}")
    if not os.path.lexists(final):
        return
    if not final.is_dir():
        raise UsageError(f"output path {final} exists and is not a directory")
    if not force:
        raise UsageError(f"output directory {final} exists; pass {opt('force')} to replace it, or choose "
                         f"another {opt('out')}")
    if any(final.iterdir()) and not looks_like_output(final):
        raise UsageError(f"output directory {final} exists and is not a tnncompress output (it has no "
                         f"{' or '.join(MARKERS)}); refusing to replace it even with {opt('force')}")


@contextlib.contextmanager
def output_lock(final: Path) -> Iterator[Path]:
    """Hold `.NAME.lock` next to `final` for the duration of the block."""
    path = final.parent / f".{final.name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write next to the output directory {final} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UsageError(f"another tnncompress run ({holder}) is writing {final}; wait for it to finish "
                             "or stop it") from None
        try:  # the previous holder may have unlinked the file between our open and our flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"PID {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown process"


def _remove_stale(final: Path) -> None:
    """Staging directories of earlier versions (`.NAME.partial-PID`) whose process is gone."""
    prefix = f".{final.name}.partial-"
    for entry in final.parent.glob(f"{prefix}*"):
        pid = entry.name[len(prefix):]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _check_writable(ws: Workspace, needed_bytes: int) -> None:
    probe = ws.root / ".write-test"
    try:
        probe.write_bytes(b"tnncompress")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write next to the output directory {ws.final} ({exc.strerror})") from None
    free = shutil.disk_usage(ws.root).free
    if needed_bytes > free:
        raise UsageError(f"the output needs about {needed_bytes / 2**20:,.0f} MiB and {ws.root.parent} has "
                         f"{free / 2**20:,.0f} MiB free")


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False, resumable: bool = False, resume: bool = False,
                     inputs: Iterable[str | Path] = (), needed_bytes: int = 0) -> Iterator[Workspace]:
    """Yield a Workspace whose `output` directory replaces `final` when the block succeeds."""
    final = destination(final)
    inputs = list(inputs)
    check_destination(final, force, inputs)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the parent of the output directory {final} ({exc.strerror})") from None
    ws = workspace(final)
    with output_lock(final):
        _remove_stale(final)
        if ws.root.exists():
            if ws.kept_state() and not (resume or force):
                raise UsageError(f"an interrupted run is kept in {ws.root}: pass {opt('resume')} to continue "
                                 f"it, or {opt('force')} to start over")
            if not (resume and resumable and ws.kept_state()):
                shutil.rmtree(ws.root)
        shutil.rmtree(ws.output, ignore_errors=True)  # a resumed run rewrites every output file
        ws.output.mkdir(parents=True)
        try:
            _check_writable(ws, needed_bytes)
            yield ws
            check_destination(final, force, inputs)  # it may have appeared meanwhile
            _commit(ws)
        except BaseException as exc:
            if resumable and ws.kept_state():
                log.warning("the run stopped; its distillation state is kept in %s: run the same command with "
                            "--resume to continue", ws.root)
            else:
                shutil.rmtree(ws.root, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                          errno.EPERM, errno.EIO):
                raise TnncompressError(f"writing the output {final} failed: {exc.strerror}"
                                       + (f" ({exc.filename})" if exc.filename else "")) from None
            raise
        shutil.rmtree(ws.root, ignore_errors=True)


def _commit(ws: Workspace) -> None:
    """Put `ws.output` in place of `ws.final`; the previous result (under --force) goes only after."""
    if os.path.lexists(ws.final):
        previous = ws.final.parent / f".{ws.final.name}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        ws.final.rename(previous)
        try:
            ws.output.rename(ws.final)
        except BaseException:
            previous.rename(ws.final)
            raise
        shutil.rmtree(previous, ignore_errors=True)
    else:
        ws.output.rename(ws.final)
