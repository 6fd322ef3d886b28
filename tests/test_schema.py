"""Typed records to plain data and back: types checked (and converted only where lossless), the key at
fault named, unknown keys refused, nested records rebuilt."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tnncompress.errors import UsageError
from tnncompress.schema import coerce, from_data, to_data


@dataclass
class Inner:
    x: float
    tags: list[str] = field(default_factory=list)


@dataclass
class Outer:
    name: str
    inner: Inner
    many: list[Inner] = field(default_factory=list)
    by_key: dict[str, int] = field(default_factory=dict)
    maybe: int | None = None
    either: float | str = 0.0


def test_round_trip_of_nested_records():
    value = Outer("a", Inner(1.5, ["t"]), [Inner(2.0)], {"k": 3}, 4, "nan")
    assert from_data(Outer, to_data(value), "test") == value


@pytest.mark.parametrize(("value", "hint", "want"), [(3, float, 3.0), (2.5, str, "2.5"), (None, int | None, None),
                                                     ([1, 2], list[float], [1.0, 2.0]), ("inf", float | str, "inf")])
def test_lossless_conversions(value, hint, want):
    got = coerce(value, hint, "k")
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(("value", "hint", "message"), [
    (True, int, "k: expected int, got True"), (1.5, int, "expected int"), ("x", list[str], r"expected list\[str\]"),
    ([1, "a"], list[int], r"expected list\[int\]"), ({"a": "b"}, dict[str, int], r"k\.a: expected int")])
def test_wrong_types_name_the_key(value, hint, message):
    with pytest.raises(UsageError, match=message):
        coerce(value, hint, "k")


def test_unknown_and_missing_keys():
    with pytest.raises(UsageError, match="src: unknown key zzz"):
        from_data(Inner, {"x": 1.0, "zzz": 2}, "src")
    with pytest.raises(TypeError):  # a required field without a value is a programming error, not input
        from_data(Inner, {}, "src")
