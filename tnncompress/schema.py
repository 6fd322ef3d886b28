"""Typed records to plain data (JSON, YAML) and back.

Configurations and results are dataclasses; files hold plain mappings. `to_data` turns a record into
plain data; `coerce` checks a plain value against a type annotation (converting only where it is
lossless: an int where a float is expected, a number where a string is) and names the key at fault;
`from_data` rebuilds a record, nested records, lists and optionals included, refusing unknown keys.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import cache
from pathlib import Path

from .errors import UsageError, brief


def to_data(value: object) -> object:
    """Plain data (dicts, lists, str, numbers, bools, None) for a record and what it holds."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    return str(value) if isinstance(value, Path) else value


@cache
def hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def coerce(value: object, hint, key: str) -> object:
    """`value` as an instance of `hint`, or a UsageError naming `key`."""
    union = typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType)
    for t in typing.get_args(hint) if union else (hint,):
        origin, args = typing.get_origin(t) or t, typing.get_args(t)
        if t in (typing.Any, object) or (value is None and t is type(None)):
            return value
        if origin is list and isinstance(value, (list, tuple)):
            try:
                return [coerce(v, args[0] if args else typing.Any, key) for v in value]
            except UsageError:
                continue
        if origin is dict and isinstance(value, dict):
            return {str(k): coerce(v, args[1] if args else typing.Any, f"{key}.{k}") for k, v in value.items()}
        if dataclasses.is_dataclass(origin) and isinstance(value, dict):
            return from_data(origin, value, key)
        if isinstance(origin, type) and issubclass(origin, enum.Enum):  # written as its value
            try:
                return origin(value)
            except ValueError:
                continue
        if isinstance(value, bool) != (origin is bool) or not isinstance(origin, type) or origin in (list, dict):
            continue  # a bool is never a number here, nor a number a bool
        if origin in (float, str) and isinstance(value, (int, float)) or isinstance(value, origin):
            return origin(value) if origin in (float, str) else value
    name = str(hint) if union or typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        name = " or ".join(repr(m.value) for m in hint)
    raise UsageError(f"{key}: expected {name.replace('NoneType', 'None')}, got {brief(value)}")


def from_data(cls: type, mapping: object, source: str):
    """An instance of the dataclass `cls` from a mapping; absent keys take their defaults."""
    if not isinstance(mapping, dict):
        raise UsageError(f"{source}: expected a mapping, got {brief(mapping)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in mapping if k not in known)
    if unknown:
        raise UsageError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])} "
                         f"(known: {', '.join(known)})")
    return cls(**{k: coerce(v, hints(cls)[k], f"{source}.{k}") for k, v in mapping.items()})
