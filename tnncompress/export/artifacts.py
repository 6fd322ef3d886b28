"""The compressed model on disk: `model.safetensors` (every weight, factors included) and
`structure.json` (the architecture reference and, per compressed layer, its format, ranks,
tensorization, convolution hyper-parameters and evaluation plan). `load(DIR)` rebuilds the `nn.Module`
from these two files alone: the architecture from its constructor, the tensorial layers from their
records, the weights strictly from safetensors. Nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from torch import nn

from .. import __version__
from ..errors import CheckpointError, UsageError
from ..formats import KernelShape, Tensorization, TensorizedConv2d
from ..io.arch import build_model, load_into, parse_arch
from ..io.checkpoint import read_checkpoint, save_state_dict
from .deploy import tensorized_inputs

STRUCTURE_SCHEMA = 1
WEIGHTS, STRUCTURE = "model.safetensors", "structure.json"


def layer_record(name: str, layer: TensorizedConv2d, input_shape: tuple[int, ...] | None = None) -> dict:
    record = {"name": name, "format": layer.format.name, "shape": asdict(layer.shape),
              "tensorization": layer.tensorization.to_dict() if layer.tensorization else None,
              "ranks": layer.ranks, "stride": list(layer.stride),
              "padding": layer.padding if isinstance(layer.padding, str) else list(layer.padding),
              "dilation": list(layer.dilation), "padding_mode": layer.padding_mode,
              "bias": layer.bias is not None, "linear": layer.linear, "optimize": layer.optimize,
              "expression": layer.expression}
    if input_shape is not None:
        expr = layer.plan_for(input_shape)
        record["plan"] = {"input_shape": list(input_shape), "steps": [s.label for s in expr.plan],
                          "flops": expr.flops}
    return record


def write_compressed(directory: Path, model: nn.Module, arch: str, arch_kwargs: dict,
                     input_size: tuple[int, int, int], metadata: dict | None = None) -> dict:
    """Write model.safetensors and structure.json into `directory`; returns the structure."""
    if arch.startswith("pickled"):
        raise UsageError("a model loaded from a pickled module cannot be saved for load(): pass --arch "
                         "with a state-dict checkpoint instead")
    inputs = tensorized_inputs(model, input_size)
    layers = [layer_record(n, m, inputs.get(n)) for n, m in model.named_modules() if isinstance(m, TensorizedConv2d)]
    structure = {"schema": STRUCTURE_SCHEMA, "tnncompress_version": __version__, "arch": arch,
                 "arch_kwargs": arch_kwargs, "input_size": list(input_size), "layers": layers, **(metadata or {})}
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(model.state_dict(), directory / WEIGHTS,
                    metadata={"format": "tnncompress", "schema": str(STRUCTURE_SCHEMA), "arch": arch,
                              "tnncompress_version": __version__})
    (directory / STRUCTURE).write_text(json.dumps(structure, indent=2) + "\n")
    return structure


def _layer_from_record(record: dict) -> TensorizedConv2d:
    tz = record.get("tensorization")
    return TensorizedConv2d(
        record["format"], KernelShape(**record["shape"]), record["ranks"],
        Tensorization(tuple(tz["out_modes"]), tuple(tz["in_modes"])) if tz else None,
        stride=tuple(record["stride"]),
        padding=record["padding"] if isinstance(record["padding"], str) else tuple(record["padding"]),
        dilation=tuple(record["dilation"]), padding_mode=record["padding_mode"], bias=record["bias"],
        linear=record["linear"], optimize=record.get("optimize", "optimal"))


def load(directory: str | Path) -> nn.Module:
    """Rebuild a compressed model written by `tnncompress run` (or `write_compressed`), in eval mode."""
    directory = Path(directory)
    if not (directory / STRUCTURE).is_file() or not (directory / WEIGHTS).is_file():
        raise UsageError(f"{directory}: not a tnncompress output (needs {STRUCTURE} and {WEIGHTS})")
    try:
        structure = json.loads((directory / STRUCTURE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{directory / STRUCTURE}: not valid JSON ({exc})") from None
    if structure.get("schema") != STRUCTURE_SCHEMA:
        raise CheckpointError(f"{directory / STRUCTURE}: schema {structure.get('schema')!r}, "
                              f"this tnncompress reads schema {STRUCTURE_SCHEMA}")
    spec = parse_arch(structure["arch"])
    model = build_model(spec, kwargs=structure.get("arch_kwargs", {}))
    for record in structure["layers"]:
        model.set_submodule(record["name"], _layer_from_record(record))
    state = read_checkpoint(directory / WEIGHTS).state_dict
    return load_into(model, state, spec).eval()
