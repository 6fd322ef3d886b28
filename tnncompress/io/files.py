"""Reading the small text inputs (recipes, ranks files, structure.json) as untrusted files, and writing
every output file the one safe way.

Every path is checked with a precise reason (missing, a symlink loop, a directory), every file is
bounded in size before it is read, decoded as UTF-8 with a clear error, and YAML is read without
aliases: `&a [*a, *a]` nested nine deep is a 300-byte file that expands to gigabytes ("billion
laughs"), and no recipe or ranks file needs an alias.

Every file tnncompress writes goes through `write_atomically`: a temporary file in the same directory,
renamed over the target, so a reader never sees half a file and a link planted at the target's name
(`report.md -> ~/.bashrc`) is never written through: a target that exists and is not a regular file
is refused.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from ..errors import UsageError
from ..limits import check


def check_file(path: str | Path, what: str) -> Path:
    """`path` as a Path when it names a readable regular file; otherwise a UsageError that says why."""
    path = Path(path)
    try:
        os.stat(path)  # follows links: a loop or a dangling link fails here
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{what} {path}: a symbolic link loop") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"{what} not found: {path}") from None
        raise UsageError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    if os.path.isdir(path):
        raise UsageError(f"{what} is a directory, not a file: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path}: not a regular file")
    return path


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a small input file, bounded by the `text_bytes` limit."""
    path = check_file(path, what)
    check("text_bytes", path.stat().st_size, f"{what} {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not a text file (not valid UTF-8)") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot be read ({exc.strerror})") from None


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases (`*name`) before they are expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed here", mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, source: str) -> object:
    """The YAML document in `text` (JSON is YAML too); errors name `source` and stay one line."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise UsageError(f"{source}: not valid YAML ({' '.join(line.strip() for line in first[:3])[:200]})") from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply") from None


def read_yaml(path: str | Path, what: str) -> object:
    return parse_yaml(read_text(path, what), f"{what} {path}")


def read_json(path: str | Path, what: str, error: type[Exception] = UsageError) -> object:
    """The JSON document in a small file; a malformed one raises `error` naming the file."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply") from None


def inside(path: str | Path, directory: str | Path) -> bool:
    """Whether `path` is `directory` or lies under it, symbolic links resolved."""
    p, d = os.path.realpath(path), os.path.realpath(directory)
    return p == d or p.startswith(d.rstrip(os.sep) + os.sep)


def write_atomically(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call writer(tmp) on a new file next to `path`, then rename it over `path`, with the mode open()
    would give (mkstemp makes 0600). A `path` that exists as anything but a regular file (a symbolic
    link, a directory, a FIFO) is refused: a rename would replace a link, but refusing says why."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) \
                else "not a regular file"
            raise UsageError(f"{path} is {kind}; refusing to write through it (remove it, or write elsewhere)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """`text` as UTF-8 into `path`, atomically (see write_atomically)."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
