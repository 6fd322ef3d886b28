"""The compressed model on disk: `model.safetensors` (every weight, factors included) and
`structure.json` (the architecture reference and, per compressed layer, its format, ranks,
tensorization, convolution hyper-parameters, evaluation plan and the form it loads in; and a BQN's
quantised activations, when it has them). `load(DIR)`
rebuilds the `nn.Module` from these two files alone: the architecture from its constructor, the
tensorial layers from their records, the weights strictly from safetensors. Nothing is unpickled.

Each layer loads in the form measured fastest in eager PyTorch when the run exported it (the dense
kernel rebuilt from the factors, or a factor chain with its plan's path recorded, so that loading
measures nothing); `load(DIR, form="factors")` gives the trainable factors instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..bayes import activations
from ..einsum import paths
from ..einsum.autotune import path_fits
from ..errors import CheckpointError, UntrustedCheckpointError, UsageError, brief, opt
from ..formats import KernelShape, Tensorization, TensorizedConv2d, TensorizedLayer, TensorizedLinear
from ..io import (
    arch_from_file,
    build_model,
    check_arch_kwargs,
    check_fits,
    inside,
    load_into,
    read_checkpoint,
    read_json,
    save_state_dict,
    write_text,
)
from .deploy import DENSE, DeployChoice, bind, dense_module, tensorized_inputs
from .structure import STRUCTURE_SCHEMA, check_structure

WEIGHTS, STRUCTURE = "model.safetensors", "structure.json"


LOAD_FORMS = ("fast", "factors", "dense")


def layer_record(name: str, layer: TensorizedLayer, input_shape: tuple[int, ...] | None = None,
                 load_form: DeployChoice | None = None) -> dict:
    record = {"name": name, "format": layer.format.name, "shape": asdict(layer.shape),
              "tensorization": layer.tensorization.to_dict() if layer.tensorization else None,
              "ranks": layer.ranks, "stride": list(layer.stride),
              "padding": layer.padding if isinstance(layer.padding, str) else list(layer.padding),
              "dilation": list(layer.dilation), "padding_mode": layer.padding_mode,
              "bias": layer.bias is not None, "linear": isinstance(layer, TensorizedLinear), "optimize": layer.optimize,
              "expression": layer.expression}
    if input_shape is not None:
        expr = layer.plan_for(input_shape)
        record["plan"] = {"input_shape": list(input_shape), "steps": [s.label for s in expr.plan],
                          "flops": expr.flops}
    if load_form is not None:
        record["load"] = {"form": load_form.form, "plan": load_form.plan, "path": load_form.path}
    return record


def write_compressed(directory: Path, model: nn.Module, arch: str, arch_kwargs: dict,
                     input_size: tuple[int, int, int], metadata: dict | None = None,
                     load_forms: list[DeployChoice] = ()) -> dict:
    """Write model.safetensors and structure.json into `directory`; returns the structure. Layers
    without a load form (none given) load as their factors."""
    if arch.startswith("pickled"):
        raise UsageError(f"a model loaded from a pickled module cannot be saved for load(): pass {opt('arch')} "
                         "with a state-dict checkpoint instead")
    inputs = tensorized_inputs(model, input_size)
    forms = {c.name: c for c in load_forms}
    layers = [layer_record(n, m, inputs.get(n), forms.get(n)) for n, m in model.named_modules()
              if isinstance(m, TensorizedLayer)]
    structure = {"schema": STRUCTURE_SCHEMA, "tnncompress_version": __version__, "arch": arch,
                 "arch_kwargs": arch_kwargs, "input_size": list(input_size), "layers": layers, **(metadata or {})}
    quantised = activations.record(model)
    if quantised is not None:
        structure["activations"] = quantised
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(model.state_dict(), directory / WEIGHTS,
                    metadata={"format": "tnncompress", "schema": str(STRUCTURE_SCHEMA), "arch": arch,
                              "tnncompress_version": __version__})
    write_text(directory / STRUCTURE, json.dumps(structure, indent=2) + "\n")
    return structure


def _layer_from_record(record: dict) -> TensorizedLayer:
    tz = record.get("tensorization")
    common = dict(fmt=record["format"], shape=KernelShape(**record["shape"]), ranks=record["ranks"],
                  tensorization=Tensorization(tuple(tz["out_modes"]), tuple(tz["in_modes"])) if tz else None,
                  bias=record["bias"], optimize=record.get("optimize", "optimal"))
    if record["linear"]:
        return TensorizedLinear(**common)
    return TensorizedConv2d(
        **common, stride=tuple(record["stride"]), dilation=tuple(record["dilation"]),
        padding=record["padding"] if isinstance(record["padding"], str) else tuple(record["padding"]),
        padding_mode=record["padding_mode"])


def _own_file(directory: Path, name: str) -> Path:
    """DIR/name, refused when it is missing or a symbolic link that leads out of DIR: an output
    directory must be as safe to open as the files in it."""
    path = directory / name
    if not path.is_file():
        raise UsageError(f"{directory}: not a tnncompress output (needs {STRUCTURE} and {WEIGHTS})")
    if not inside(path, directory):
        raise UntrustedCheckpointError(f"{path} is a symbolic link to {os.path.realpath(path)}, outside {directory}; "
                                       "refusing to follow it")
    return path


def _build(structure: dict, spec, kwargs: dict, origin: str, device: str) -> nn.Module:
    model = build_model(spec, kwargs=kwargs, device=device)
    layers = structure.get("layers")
    if not isinstance(layers, list):
        raise CheckpointError(f"{origin}: 'layers' must be a list of layer records")
    with torch.device(device):
        for record in layers:
            name = record.get("name") if isinstance(record, dict) else None
            try:
                model.get_submodule(name)
                model.set_submodule(name, _layer_from_record(record))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{origin}: layer record {brief(name)} is invalid "
                                      f"({type(exc).__name__}: {brief(str(exc), 200)})") from None
        if "activations" in structure:  # a BQN's quantised activations, replayed on the rebuilt model
            try:
                model = activations.from_record(model, structure["activations"])
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{origin}: 'activations' is invalid ({brief(str(exc), 200)})") from None
    return model


def _deployment_form(model: nn.Module, structure: dict, form: str, origin: str) -> nn.Module:
    """Each layer in the form `form` asks for: "dense", or "fast" (the recorded form; a layer
    without one keeps its factors)."""
    for record in structure["layers"]:
        name = record["name"]
        chosen = record.get("load") or {}
        wanted = DENSE if form == DENSE else chosen.get("form")
        if wanted not in (DENSE, "factors"):
            continue
        layer = model.get_submodule(name)
        try:
            if wanted == DENSE:
                module = dense_module(layer).eval()
            else:
                shape = (record.get("plan") or {}).get("input_shape")
                if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
                    raise ValueError(f"plan.input_shape {brief(shape)} is not a list of positive integers")
                path = chosen.get("path")
                # a path from the file must be valid, and must not be one that would exhaust memory
                if not path_fits(layer.plan_for(tuple(shape)), paths.check_path(len(layer.factors) + 1, path)):
                    raise ValueError("its path's intermediates exceed the memory the planner allows")
                module = bind(layer, tuple(shape), path)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{origin}: layer record {brief(name)}: its load form is invalid "
                                  f"({type(exc).__name__}: {brief(str(exc), 200)})") from None
        model.set_submodule(name, module)
    return model


def read_structure(directory: str | Path) -> dict:
    """DIR/structure.json, every field checked (export/structure.py)."""
    path = _own_file(Path(directory), STRUCTURE)
    return check_structure(read_json(path, STRUCTURE, error=CheckpointError), str(path))


def load(directory: str | Path, trust_code: bool = False, form: str = "fast") -> nn.Module:
    """Rebuild a compressed model written by `tnncompress run` (or `write_compressed`), in eval mode.

    form: "fast" (the default): each layer in the form the run measured fastest in eager PyTorch (a
    factor chain is planned for the recorded input size and refuses other sizes); "factors": the
    trainable factors at any input size; "dense": every layer as the dense kernel its factors rebuild.

    Nothing in DIR runs code: the architecture must be a registry name (`tnncompress:`, `torchvision:`)
    unless `trust_code=True` allows the `module:factory` a run with a user architecture records; the
    model is first built on the meta device and checked against the weights' shapes, so a tampered
    structure.json cannot make it allocate more than the weights file holds."""
    if form not in LOAD_FORMS:
        raise UsageError(f"form must be one of {', '.join(LOAD_FORMS)}, got {brief(form)}")
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory (a tnncompress output holds {STRUCTURE} and {WEIGHTS})")
    weights_path = _own_file(directory, WEIGHTS)
    structure = read_structure(directory)
    origin = str(directory / STRUCTURE)
    spec = arch_from_file(structure.get("arch"), origin, trust_code,
                          "pass trust_code=True if you trust the file")
    kwargs = check_arch_kwargs(spec, structure.get("arch_kwargs", {}), origin)
    state = read_checkpoint(weights_path).state_dict
    check_fits(_build(structure, spec, kwargs, origin, "meta"), state, spec)  # shapes only: nothing allocated
    model = load_into(_build(structure, spec, kwargs, origin, "cpu"), state, spec).eval()
    return model if form == "factors" else _deployment_form(model, structure, form, origin)
