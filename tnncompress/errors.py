"""The errors tnncompress raises on bad input, each mapped to a documented exit code.

The CLI turns any `TnncompressError` into a one-line message and its exit code; other exceptions are
bugs and exit 1 with a traceback only under `--debug`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

QUOTE_LIMIT = 80  # characters of a user-supplied value a message quotes
_OPTION = re.compile("\x1f([A-Za-z0-9_.]+)\x1f")


def opt(key: str) -> str:
    """A reference to option `key` (a recipe key such as "kd_steps", or "force"; "no_onnx" for turning
    a switch off) inside a message. The library prints it as the key; the command line as its flag
    (`--kd-steps`, `--no-onnx`), so that library errors do not speak in CLI terms and CLI errors do."""
    return f"\x1f{key}\x1f"


def brief(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr(value), cut to `limit` characters: a message quotes what was wrong, never all of it
    (a 300-byte YAML alias bomb expands to gigabytes)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 20:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class TnncompressError(Exception):
    exit_code = 1

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each option reference written by `name_of(key)`."""
        # (Exception's text, not a KeyError's repr, for an error that is also a KeyError)
        return _OPTION.sub(lambda m: name_of(m.group(1)), Exception.__str__(self))

    def __str__(self) -> str:  # the library's wording: option references as recipe keys
        return self.render(lambda key: f"{key[3:]}=False" if key.startswith("no_") else key)


class UsageError(TnncompressError):
    """Bad option values, missing files or directories: exit code 2."""

    exit_code = 2


class LimitError(UsageError):
    """An input that would need more memory than a documented limit allows (see tnncompress.limits)."""


class CheckpointError(TnncompressError):
    """A checkpoint that cannot be read or does not fit the architecture."""

    exit_code = 1


class MalformedFileError(CheckpointError):
    """A file tnncompress wrote (structure.json, bqn.safetensors) whose fields are malformed or out of range:
    bad input, exit code 2."""

    exit_code = 2


class UntrustedCheckpointError(CheckpointError):
    """A file that would run code (a pickled module, an architecture named as module:factory) given
    without --trust-checkpoint / trust_code=True."""

    exit_code = 2


class NumericalError(TnncompressError):
    """Weights or outputs that are not finite (NaN or infinity)."""

    exit_code = 1


class DataError(TnncompressError):
    """A dataset that is missing, malformed, or does not fit the model."""

    exit_code = 1


class ExportError(TnncompressError):
    """The ONNX export failed, or does not reproduce the model (onnx.checker, onnxruntime mismatch): exit 3."""

    exit_code = 3
