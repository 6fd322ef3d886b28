"""One registry type for everything a user names: formats, models, dataset kinds, decomposers and plan
strategies. An entry is registered once under its name; looking up a name that is not there raises one
error type, with the nearest names ("did you mean") and the known ones, so every `--format`, `--arch`,
`--data`, `--decomposer` and plan option fails the same way.

    FORMATS = Registry("format")
    FORMATS.add("cp", CP())            # or @FORMATS.register("cp") on a function or class
    FORMATS.get("cpp")                 # UnknownNameError: unknown format 'cpp'; did you mean 'cp'? ...
    FORMATS.names(lambda f: f.reshaped)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UsageError, brief

T = TypeVar("T")
SUGGESTIONS = 3  # nearest names a message offers
LISTED = 30  # known names a message lists before it stops


def suggestion(name: object, names: list[str]) -> str:
    """"; did you mean 'x'?" for the names nearest `name`, or "" when none is near."""
    near = difflib.get_close_matches(str(name), names, n=SUGGESTIONS, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""


class UnknownNameError(UsageError, KeyError):
    """A name no entry of a registry has (exit code 2, as every bad option value). It is also a KeyError,
    as a failed lookup by key is, so code that treats a registry as a mapping keeps working."""


class Registry(Generic[T]):
    """Named entries of one kind, in registration order (or `order`'s, when given)."""

    def __init__(self, kind: str, order: Callable[[str, T], object] | None = None):
        self.kind = kind  # what an entry is, as a message says it: "format", "dataset kind"
        self._entries: dict[str, T] = {}
        self._order = order

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> T:
        """Take an entry out (a test's temporary entry, a plugin unloaded)."""
        return self._entries.pop(name)

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator: `@REGISTRY.register("name")` adds what it decorates under `name`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The message for a name that is not registered: the nearest names, then the known ones."""
        return f"unknown {self.kind} {brief(name)}{self.suggest(name)} (known: {self.listed()})"

    def suggest(self, name: object) -> str:
        return suggestion(name, self.names())

    def listed(self, label: Callable[[str, T], str] = lambda name, _: name) -> str:
        """The known names as a message lists them (each written by `label`), cut after LISTED."""
        items = self.items()
        text = ", ".join(label(name, entry) for name, entry in items[:LISTED])
        return text + (f", ... ({len(items)} in all)" if len(items) > LISTED else "")

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """The registered names, in order; with `where`, those whose entry it accepts."""
        return [name for name, entry in self.items() if where is None or where(entry)]

    def entries(self, where: Callable[[T], bool] | None = None) -> list[T]:
        return [entry for _, entry in self.items() if where is None or where(entry)]

    def items(self) -> list[tuple[str, T]]:
        items = list(self._entries.items())
        return sorted(items, key=lambda item: self._order(*item)) if self._order else items

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
