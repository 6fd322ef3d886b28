"""structure.json checked field by field before anything is built from it.

An output directory is untrusted input like a checkpoint: a tampered or damaged structure.json must
fail in one line naming the file, the layer and the field, not as a ZeroDivisionError in a planner or
a 6 GB allocation at an input size the limits never saw. `check_structure` checks the types and ranges
of every field the loader reads (the paths of recorded load forms are checked where they are used,
against the layer they plan); whether the layers fit the weights is checked after, on the meta device.
"""

from __future__ import annotations

from ..einsum import PATH_STRATEGIES
from ..errors import CheckpointError, MalformedFileError, brief
from ..formats import list_formats
from ..limits import check

STRUCTURE_SCHEMA = 1
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
OPTIMIZE = ("measure", *PATH_STRATEGIES)  # what a recorded layer may name: a strategy, or timed plans
LOAD = ("dense", "factors", None)
MAX_DIM = 1 << 24  # channels, kernel taps, modes or ranks beyond this are not a model's


class StructureError(MalformedFileError):
    """A structure.json whose fields are malformed: exit code 2, as for other bad input."""


def _int(value, what: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_DIM:
        raise ValueError(f"{what} must be an integer in {minimum}..{MAX_DIM}, got {brief(value)}")
    return value


def _ints(value, what: str, length: int | None = None, minimum: int = 1) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) != length) or not value:
        raise ValueError(f"{what} must be a list of {length or 'some'} integers, got {brief(value)}")
    return [_int(v, f"{what}[{i}]", minimum) for i, v in enumerate(value)]


def input_size(value, origin: str) -> tuple[int, int, int]:
    """A recorded C,H,W: three positive integers within the input-size limit."""
    try:
        size = tuple(_ints(value, "input_size", 3))
    except ValueError as exc:
        raise StructureError(f"{origin}: {exc}") from None
    check("input_elements", size[0] * size[1] * size[2], f"{origin}: input_size {','.join(map(str, size))}")
    return size


def _layer(record) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"a layer record must be an object, got {brief(record)}")
    if record.get("format") not in list_formats():
        raise ValueError(f"format {brief(record.get('format'))} is not one of {', '.join(list_formats())}")
    shape = record.get("shape")
    if not isinstance(shape, dict) or set(shape) != {"out_channels", "in_channels", "kh", "kw", "groups"}:
        raise ValueError(f"shape must hold out_channels, in_channels, kh, kw and groups, got {brief(shape)}")
    for key, value in shape.items():
        _int(value, f"shape.{key}")
    if shape["out_channels"] % shape["groups"]:
        raise ValueError(f"shape.out_channels {shape['out_channels']} is not divisible by groups {shape['groups']}")
    tz = record.get("tensorization")
    if tz is not None:
        if not isinstance(tz, dict) or set(tz) != {"out_modes", "in_modes"}:
            raise ValueError(f"tensorization must hold out_modes and in_modes, got {brief(tz)}")
        for key in ("out_modes", "in_modes"):
            _ints(tz[key], f"tensorization.{key}")
    ranks = record.get("ranks")
    if not isinstance(ranks, dict) or not ranks or not all(isinstance(k, str) for k in ranks):
        raise ValueError(f"ranks must be an object of rank names to integers, got {brief(ranks)}")
    for key, value in ranks.items():
        _int(value, f"ranks.{key}")
    for key in ("bias", "linear"):
        if not isinstance(record.get(key), bool):
            raise ValueError(f"{key} must be true or false, got {brief(record.get(key))}")
    if not record["linear"]:
        _ints(record.get("stride"), "stride", 2)
        _ints(record.get("dilation"), "dilation", 2)
        padding = record.get("padding")
        if padding not in ("same", "valid"):
            _ints(padding, "padding", 2, minimum=0)
        if record.get("padding_mode") not in PADDING_MODES:
            raise ValueError(f"padding_mode {brief(record.get('padding_mode'))} is not one of "
                             f"{', '.join(PADDING_MODES)}")
    if record.get("optimize", "optimal") not in OPTIMIZE:
        raise ValueError(f"optimize {brief(record.get('optimize'))} is not one of {', '.join(OPTIMIZE)}")
    plan = record.get("plan")
    if plan is not None:
        if not isinstance(plan, dict):
            raise ValueError(f"plan must be an object, got {brief(plan)}")
        if "input_shape" in plan:
            _ints(plan["input_shape"], "plan.input_shape")
    load = record.get("load")
    if load is not None and (not isinstance(load, dict) or load.get("form") not in LOAD):
        raise ValueError(f"load must be an object whose form is dense or factors, got {brief(load)}")


def check_structure(doc, origin: str) -> dict:
    """`doc` (structure.json as read) when every field the loader reads is well formed; else a
    StructureError naming `origin` and the field."""
    if not isinstance(doc, dict):
        raise StructureError(f"{origin}: expected a JSON object")
    if doc.get("schema") != STRUCTURE_SCHEMA:
        raise CheckpointError(f"{origin}: schema {brief(doc.get('schema'))}, "
                              f"this tnncompress reads schema {STRUCTURE_SCHEMA}")
    if "input_size" in doc:
        input_size(doc["input_size"], origin)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise StructureError(f"{origin}: 'layers' must be a list of layer records")
    seen = set()
    for index, record in enumerate(layers):
        name = record.get("name") if isinstance(record, dict) else None
        if not isinstance(name, str) or not name:
            raise StructureError(f"{origin}: layer record {index} has no name")
        if name in seen:
            raise StructureError(f"{origin}: layer {brief(name)} is recorded twice")
        seen.add(name)
        try:
            _layer(record)
        except ValueError as exc:
            raise StructureError(f"{origin}: layer record {brief(name)} is invalid ({exc})") from None
    return doc
