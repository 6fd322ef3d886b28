"""The MAP QNN as integer codes: `bqn.safetensors` holds, per quantised parameter NAME, `NAME.codes`
(uint8 indices into the levels), `NAME.levels` and `NAME.scale` (float32), so a weight is
scale * levels[codes]. model.safetensors holds the same values dequantised (what load(DIR) and the ONNX
graph use); `read_codes` rebuilds them bit for bit."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..calibrate import CalibrationPool
from ..formats import TensorizedLayer
from .network import BayesianQuantizedNetwork, load_quantised

CODES_FILE = "bqn.safetensors"


@torch.no_grad()
def fold_temperature(bqn: BayesianQuantizedNetwork) -> str | None:
    """Divide the logits by the learned softmax temperature inside the layer that computes them (its
    weight, or its quantised weight's scale, and its bias), so the exported QNN computes what its MAP
    evaluation measured, NLL and ECE included. Returns that layer's name; None (the temperature stays
    out of the export) when the network's output is not a linear, convolution or tensorial layer's."""
    out = next(n for n in bqn.propagator.graph.graph.nodes if n.op == "output").args[0]
    if getattr(out, "op", None) != "call_module":
        return None
    name = out.target
    layer = bqn.student.get_submodule(name)
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        weight = (f"{name}.weight", layer.weight)
    elif isinstance(layer, TensorizedLayer):  # the output is linear in each factor: scale the first
        weight = (f"{name}.factors.0", layer.factors[0])
    else:
        return None
    t = float(bqn.temperature)
    if weight[0] in bqn.names:
        bqn.posterior(weight[0]).log_scale.sub_(math.log(t))
    else:
        weight[1].div_(t)
    if layer.bias is not None:
        layer.bias.div_(t)
    bqn.log_temperature.zero_()
    return name


@torch.no_grad()
def apply_map(bqn: BayesianQuantizedNetwork, pool: CalibrationPool | None = None) -> dict[str, torch.Tensor]:
    """Write the MAP weights into the student in place (its norms re-estimated on `pool`, as the MAP
    evaluation does); returns the tensors of `bqn.safetensors`."""
    load_quantised(bqn.student, bqn.weights("map"), pool)
    tensors = {}
    for name in bqn.names:
        post = bqn.posterior(name)
        codes = post.codes()
        scale = post.scale.detach().float()
        levels = post.levels.float()
        tensors[f"{name}.codes"] = codes.to(torch.uint8).cpu().contiguous()
        tensors[f"{name}.levels"] = levels.cpu().contiguous()
        tensors[f"{name}.scale"] = scale.cpu().contiguous()  # one, or one per channel: broadcasts
    return tensors


def write_codes(directory: Path, tensors: dict[str, torch.Tensor], bits: int) -> Path:
    path = directory / CODES_FILE
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "tnncompress-bqn", "bits": str(bits)})
    os.replace(tmp, path)
    return path


def read_codes(directory: str | Path) -> dict[str, torch.Tensor]:
    """{parameter name: the dequantised MAP weight} from a run's `bqn.safetensors`."""
    tensors = load_file(str(Path(directory) / CODES_FILE))
    names = {k.rsplit(".", 1)[0] for k in tensors}
    return {n: tensors[f"{n}.scale"] * tensors[f"{n}.levels"][tensors[f"{n}.codes"].long()] for n in sorted(names)}
