"""Reading the small text inputs (recipes, ranks files, structure.json) as untrusted files.

Every path is checked with a precise reason (missing, a symlink loop, a directory), every file is
bounded in size before it is read, decoded as UTF-8 with a clear error, and YAML is read without
aliases: `&a [*a, *a]` nested nine deep is a 300-byte file that expands to gigabytes ("billion
laughs"), and no recipe or ranks file needs an alias.
"""

from __future__ import annotations

import errno
import json
import os
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
