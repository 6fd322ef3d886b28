"""Observers of the states the training loops save: called with each checkpoint's payload, after it is
written. Tests interrupt a run with one (raise from the observer, then resume); nothing in the library
registers one. Kept here, not as a parameter threaded through run() and every stage's signature."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Observer = Callable[[dict], None]
_OBSERVERS: list[Observer] = []


@contextlib.contextmanager
def observe_checkpoints(observer: Observer) -> Iterator[None]:
    """Call `observer(payload)` after every checkpoint saved while the block runs."""
    _OBSERVERS.append(observer)
    try:
        yield
    finally:
        _OBSERVERS.remove(observer)


def checkpoint_saved(payload: dict) -> None:
    for observer in list(_OBSERVERS):
        observer(payload)
