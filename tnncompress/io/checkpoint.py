"""Reading and writing checkpoints, treating every file as untrusted input.

What is accepted:
  * a state dict saved with `torch.save` (read with `torch.load(weights_only=True)`), also wrapped as
    {"state_dict": ...}, {"model": ...} or {"model_state_dict": ...}, with a DDP "module." prefix stripped;
  * a `.safetensors` state dict (its string metadata is kept);
  * a whole pickled `nn.Module`, only with `trust=True` (`--trust-checkpoint`): unpickling runs code.
Everything else (TorchScript archives, other formats, empty or truncated files) is refused by name.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, NumericalError, UntrustedCheckpointError, opt
from ..limits import check, inflate_allowance
from .files import check_file, write_atomically

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass
class Checkpoint:
    path: Path
    kind: str  # "state_dict" | "safetensors" | "module"
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    notes: list[str] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_MAGIC = [(b"\x89HDF", "an HDF5 file (Keras?)"), (b"\x93NUMPY", "a NumPy .npy array"),
          (b"\x1f\x8b", "a gzip archive"), (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xd8\xff", "a JPEG image")]


def _describe_unknown(head: bytes, path: Path) -> str:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if path.suffix == ".onnx":
        return "an ONNX model (export a PyTorch state dict instead)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def _is_torchscript(names: list[str]) -> bool:
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def read_checkpoint(path: str | Path, trust: bool = False, allow_nonfinite: bool = False) -> Checkpoint:
    """Read and classify a checkpoint. Weights that are not finite are refused, by tensor name,
    unless `allow_nonfinite` (then they are listed in `notes`)."""
    ckpt = _read(check_file(path, "checkpoint"), trust)
    state = ckpt.state_dict if ckpt.module is None else ckpt.module.state_dict()
    bad = nonfinite_tensors(state)
    if bad and not allow_nonfinite:
        raise NumericalError(f"{ckpt.path}: {_describe_nonfinite(bad)}; the weights are corrupt or the training "
                             "diverged")
    if bad:
        ckpt.notes.append(_describe_nonfinite(bad))
    return ckpt


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """(name, non-finite entries, entries) of every floating-point tensor holding NaN or infinity."""
    bad = []
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            count = int((~torch.isfinite(t)).sum())
            if count:
                bad.append((name, count, t.numel()))
    return bad


def _describe_nonfinite(bad: list[tuple[str, int, int]]) -> str:
    shown = ", ".join(f"{name} ({count} of {total} values)" for name, count, total in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"tensor{'s' if len(bad) > 1 else ''} {shown}{more} not finite (NaN or infinity)"


def _read(path: Path, trust: bool) -> Checkpoint:
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _read_safetensors(path)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                inflated = sum(info.file_size for info in zf.infolist())
        except zipfile.BadZipFile:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint (zip archive unreadable)") from None
        # torch.save stores its archive uncompressed; a deflated one that inflates far beyond its size
        # on disk is a decompression bomb, refused before torch.load allocates it.
        check("inflate_ratio", inflated, f"{path}: the archive expands to", allowed=inflate_allowance(size))
        if _is_torchscript(names):
            raise CheckpointError(f"{path}: a TorchScript archive; tnncompress needs the eager model's "
                                  "state dict: torch.save(model.state_dict(), path)")
    elif not head.startswith(b"\x80"):  # neither a zip nor a (legacy torch.save) pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint or safetensors file: found "
                              f"{_describe_unknown(head, path)}")
    return _read_torch(path, trust)


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({exc})") from None
    return Checkpoint(path, "safetensors", state_dict=state, metadata=metadata, sha256=sha256_of(path))


def _read_torch(path: Path, trust: bool) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc).lower() and "weights only" not in str(exc).lower():
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
        if not trust:
            raise UntrustedCheckpointError(
                f"{path} holds pickled Python objects (a whole model?), and unpickling can run arbitrary code; "
                f"re-save it as torch.save(model.state_dict(), path), or pass {opt('trust_checkpoint')} if you trust "
                "its source") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # user asked to unpickle foreign code: any failure is theirs to see
            raise CheckpointError(f"{path}: unpickling failed ({type(exc).__name__}: {_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(exc)})") from None
    return _interpret(path, obj)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _interpret(path: Path, obj) -> Checkpoint:
    sha = sha256_of(path)
    if isinstance(obj, torch.jit.ScriptModule):
        raise CheckpointError(f"{path}: a TorchScript module; save the eager model's state dict instead")
    if isinstance(obj, nn.Module):
        return Checkpoint(path, "module", module=obj, sha256=sha, notes=["whole pickled module (trusted)"])
    notes = []
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return Checkpoint(path, "module", module=inner, sha256=sha, notes=[f"module under {key!r}"])
            if isinstance(inner, dict) and _is_tensor_dict(inner):
                notes.append(f"state dict taken from the checkpoint's {key!r} entry")
                obj = inner
                break
    if not (isinstance(obj, dict) and obj and _is_tensor_dict(obj)):
        found = type(obj).__name__
        if isinstance(obj, dict):
            found = "an empty dict" if not obj else f"a dict with keys {list(obj)[:5]} and no state dict"
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {found}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        notes.append("stripped the DistributedDataParallel 'module.' prefix")
    return Checkpoint(path, "state_dict", state_dict=obj, sha256=sha, notes=notes)


def _is_tensor_dict(d: dict) -> bool:
    return all(isinstance(k, str) for k in d) and all(isinstance(v, torch.Tensor) for v in d.values())


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically. Shared storage is copied (safetensors refuses it)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    write_atomically(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}))
