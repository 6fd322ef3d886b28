"""Size limits, checked before anything is allocated.

A hostile or mistaken input (an input size of 3x100000x100000, a rank of 30000 in a ranks file, a
1 MB archive that inflates to 4 GB) must fail at once with the numbers, not exhaust the machine's
memory minutes later. Each limit has a documented default and an environment variable that raises
(or lowers) it; README.md's "Security" section lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import LimitError, UsageError

MIB = 1 << 20


@dataclass(frozen=True)
class Limit:
    name: str
    env: str
    default: float
    what: str  # what is bounded, for messages and the docs

    def value(self) -> float:
        text = os.environ.get(self.env)
        if text is None or not text.strip():
            return self.default
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"${self.env}={text[:40]!r}: expected a number") from None
        if not value > 0:
            raise UsageError(f"${self.env}={text[:40]!r}: must be positive")
        return value


LIMITS = {limit.name: limit for limit in (
    Limit("input_elements", "TNNCOMPRESS_MAX_INPUT_ELEMENTS", 1 << 26,
          "elements of one input sample (C x H x W, from --input-size, a checkpoint's metadata or a "
          "structure.json)"),
    Limit("factor_ratio", "TNNCOMPRESS_MAX_FACTOR_RATIO", 4,
          "parameters of a layer's factors (ranks from a ranks file or structure.json) per parameter of "
          "its dense kernel"),
    Limit("inflate_ratio", "TNNCOMPRESS_MAX_INFLATE_RATIO", 20,
          "bytes a compressed checkpoint archive or gzip data file may expand to, per byte on disk, "
          f"beyond the first {64} MiB"),
    Limit("text_bytes", "TNNCOMPRESS_MAX_TEXT_BYTES", 16 * MIB,
          "bytes of a recipe, a ranks file or a structure.json"),
    Limit("dataset_bytes", "TNNCOMPRESS_MAX_DATASET_BYTES", 8 << 30,
          "bytes of a dataset generated in memory (synthetic data)"),
    Limit("chain_bytes", "TNNCOMPRESS_MAX_CHAIN_BYTES", 1 << 30,
          "bytes of a factor chain's largest intermediate at the largest deployment batch (float32); a "
          "layer whose chains all exceed it deploys as its dense kernel"),
    Limit("spectrum_bytes", "TNNCOMPRESS_MAX_SPECTRUM_BYTES", 4 << 30,
          "bytes the per-frequency matrices of one layer's exact singular values need (spectrum, spectral "
          "control): about 3 x out x in channels x the grid's pixels x 8 (float64)"),
    Limit("batch_elements", "TNNCOMPRESS_MAX_BATCH_ELEMENTS", 1 << 28,
          "elements of one batch of inputs (batch size x C x H x W) of the latency, deployment and "
          "evaluation batches"),
    Limit("detect_builds", "TNNCOMPRESS_MAX_DETECT_BUILDS", 256,
          "timm architectures whose stem and classifier names a state dict has, each built on the meta device "
          "to detect its architecture (a state dict that names more is refused before any is built)"),
    Limit("image_pixels", "TNNCOMPRESS_MAX_IMAGE_PIXELS", 89_478_485,
          "pixels of one image of an image folder (Pillow's own default)"),
)}

INFLATE_FLOOR = 64 * MIB  # any file may expand to this much, whatever its compressed size


def limit(name: str) -> float:
    return LIMITS[name].value()


def check(name: str, value: float, what: str, allowed: float | None = None) -> None:
    """Raise LimitError when `value` exceeds the limit `name` (or `allowed`, a bound derived from it)."""
    bound = limit(name) if allowed is None else allowed
    if value > bound:
        spec = LIMITS[name]
        raise LimitError(f"{what}: {_num(value)} exceeds the limit of {_num(bound)} ({spec.what}); "
                         f"set ${spec.env} to raise it")


def inflate_allowance(compressed_bytes: int) -> int:
    """How many bytes a compressed file of `compressed_bytes` may expand to."""
    return int(max(INFLATE_FLOOR, limit("inflate_ratio") * compressed_bytes))


def _num(value: float) -> str:
    value = float(value)
    return f"{value:,.0f}" if value.is_integer() else f"{value:g}"
