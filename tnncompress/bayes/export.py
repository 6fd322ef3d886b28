"""The MAP QNN as integer codes: `bqn.safetensors` holds, per quantised parameter NAME, `NAME.codes`
(the indices into the levels, B bits each, packed: code i is bits i*B .. i*B + B - 1 of the byte string,
least significant bit first), `NAME.shape` (int64), `NAME.levels` and `NAME.scale` (float32), so a
weight is scale * levels[codes]. model.safetensors holds the same values dequantised (what load(DIR)
and the ONNX graph use); `read_codes` rebuilds them bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..calibrate import CalibrationPool
from ..errors import MalformedFileError, brief
from ..formats import TensorizedLayer
from ..io import check_file, write_atomically
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
    return write_atomically(directory / CODES_FILE, lambda tmp: save_file(
        tensors, str(tmp), metadata={"format": "tnncompress-bqn", "bits": str(bits)}))


def integer_weights(tensors: dict[str, torch.Tensor], bits: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{parameter name: (its integer levels as float, the scale)} of the tensors `apply_map` returns: the
    weight is their product (what model.onnx stores for a BQN, see export/rebuild.Dequantized)."""
    out = {}
    for name in sorted({k.rsplit(".", 1)[0] for k in tensors}):
        codes = unpack(tensors[f"{name}.codes"], bits, tensors[f"{name}.shape"].tolist())
        out[name] = (tensors[f"{name}.levels"][codes], tensors[f"{name}.scale"])
    return out


PARTS = ("codes", "shape", "levels", "scale")
MAX_BITS = 8


def read_codes(directory: str | Path) -> dict[str, torch.Tensor]:
    """{parameter name: the dequantised MAP weight} from a run's `bqn.safetensors`. The file is input like
    any other: every field is checked (bits 1-8, packed sizes that match the shape, codes within the
    levels, finite levels and scales that broadcast) before anything is allocated from it, and a bad one
    is a MalformedFileError naming the file and the tensor."""
    path = check_file(Path(directory) / CODES_FILE, CODES_FILE)
    try:
        with safe_open(str(path), "pt") as f:
            text = (f.metadata() or {}).get("bits", "8")
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a damaged file
        raise MalformedFileError(f"{path}: not a readable safetensors file ({brief(str(exc), 200)})") from None
    bits = int(text) if isinstance(text, str) and text.isdigit() else None
    if bits is None or not 1 <= bits <= MAX_BITS:
        raise MalformedFileError(f"{path}: bits {brief(text)} is not an integer in 1..{MAX_BITS}")
    names: dict[str, set[str]] = {}
    for key in tensors:
        name, _, part = key.rpartition(".")
        if not name or part not in PARTS:
            raise MalformedFileError(f"{path}: unexpected tensor {brief(key)} (expected NAME.{{{','.join(PARTS)}}})")
        names.setdefault(name, set()).add(part)
    out = {}
    for n in sorted(names):
        try:
            out[n] = _dequantise({p: tensors[f"{n}.{p}"] for p in names[n]}, bits)
        except ValueError as exc:
            raise MalformedFileError(f"{path}: {brief(n)}: {exc}") from None
    return out


def _dequantise(parts: dict[str, torch.Tensor], bits: int) -> torch.Tensor:
    missing = [p for p in ("codes", "levels", "scale") if p not in parts]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    codes, levels, scale = parts["codes"], parts["levels"], parts["scale"]
    if levels.dim() != 1 or not 1 <= levels.numel() <= 2 ** bits or not levels.is_floating_point():
        raise ValueError(f"levels must be a float vector of 1..{2 ** bits} values, got {levels.dtype} "
                         f"{list(levels.shape)}")
    if not (torch.isfinite(levels).all() and scale.is_floating_point() and torch.isfinite(scale).all()):
        raise ValueError("levels and scale must be finite floats")
    if codes.dtype != torch.uint8:
        raise ValueError(f"codes must be uint8, got {codes.dtype}")
    if "shape" in parts:  # packed (files from before packing hold one uint8 per code)
        shape = parts["shape"]
        if shape.dtype != torch.int64 or shape.dim() != 1 or shape.numel() > 8 or (shape <= 0).any():
            raise ValueError(f"shape must be at most 8 positive int64 sizes, got {shape.dtype} {shape.tolist()[:9]}")
        shape = shape.tolist()
        need = -(-math.prod(shape) * bits // 8)
        if codes.dim() != 1 or codes.numel() != need:  # also bounds what unpacking allocates: the file's own size
            raise ValueError(f"{math.prod(shape):,} codes of {bits} bits need {need:,} packed bytes, the file holds "
                             f"{codes.numel():,}")
        codes = unpack(codes, bits, shape)
    if codes.numel() and int(codes.max()) >= levels.numel():
        raise ValueError(f"a code {int(codes.max())} beyond the {levels.numel()} levels")
    try:
        if torch.broadcast_shapes(scale.shape, codes.shape) != codes.shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"scale of shape {list(scale.shape)} does not broadcast to the weight's "
                         f"{list(codes.shape)}") from None
    return scale.float() * levels.float()[codes.long()]
