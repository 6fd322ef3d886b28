"""The MAP QNN as integer codes: `bqn.safetensors` holds, per quantised parameter NAME, `NAME.codes`
(the indices into the levels, B bits each, packed: code i is bits i*B .. i*B + B - 1 of the byte string,
least significant bit first), `NAME.shape` (int64), `NAME.levels` and `NAME.scale` (float32), so a
weight is scale * levels[codes]. model.safetensors holds the same values dequantised (what load(DIR)
and the ONNX graph use); `read_codes` rebuilds them bit for bit."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
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
        tensors[f"{name}.codes"] = pack(codes.cpu(), bqn.bits)
        tensors[f"{name}.shape"] = torch.tensor(codes.shape, dtype=torch.int64)
        tensors[f"{name}.levels"] = levels.cpu().contiguous()
        tensors[f"{name}.scale"] = scale.cpu().contiguous()  # one, or one per channel: broadcasts
    return tensors


CHUNK = 1 << 20  # codes packed at a time (a multiple of 8: each chunk fills whole bytes)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes in 0 .. 2^bits - 1 as a uint8 bit string, `bits` per code, least significant bit first."""
    flat = codes.flatten()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ValueError(f"codes must be in 0..{2 ** bits - 1}")
    shifts, weights = torch.arange(bits, dtype=torch.uint8), torch.arange(8, dtype=torch.uint8)
    out = []
    for part in flat.to(torch.uint8).split(CHUNK):
        stream = ((part[:, None] >> shifts) & 1).flatten()
        stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).view(-1, 8)
        out.append((stream << weights).sum(1, dtype=torch.uint8))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.uint8)


def unpack(packed: torch.Tensor, bits: int, shape) -> torch.Tensor:
    """The inverse of `pack`: int64 codes of `shape`."""
    n = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != -(-n * bits // 8):
        raise ValueError(f"{n} codes of {bits} bits need {-(-n * bits // 8)} packed bytes, got "
                         f"{packed.numel()} of {packed.dtype}")
    shifts, weights = torch.arange(8, dtype=torch.uint8), torch.arange(bits, dtype=torch.int64)
    out = []
    for part in packed.split(CHUNK * bits // 8):
        stream = ((part[:, None] >> shifts) & 1).flatten()
        stream = stream[:stream.numel() - stream.numel() % bits].view(-1, bits)
        out.append((stream.to(torch.int64) << weights).sum(1))
    return torch.cat(out)[:n].view(*shape) if out else torch.zeros(shape, dtype=torch.int64)


def write_codes(directory: Path, tensors: dict[str, torch.Tensor], bits: int) -> Path:
    path = directory / CODES_FILE
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "tnncompress-bqn", "bits": str(bits)})
    os.replace(tmp, path)
    return path


def read_codes(directory: str | Path) -> dict[str, torch.Tensor]:
    """{parameter name: the dequantised MAP weight} from a run's `bqn.safetensors`."""
    path = Path(directory) / CODES_FILE
    with safe_open(str(path), "pt") as f:
        bits = int((f.metadata() or {}).get("bits", 8))
    tensors = load_file(str(path))
    out = {}
    for n in sorted({k.rsplit(".", 1)[0] for k in tensors}):
        codes = tensors[f"{n}.codes"]
        if f"{n}.shape" in tensors:  # packed (files from before packing hold one uint8 per code)
            codes = unpack(codes, bits, tensors[f"{n}.shape"].tolist())
        out[n] = tensors[f"{n}.scale"] * tensors[f"{n}.levels"][codes.long()]
    return out
