"""Versions of everything that affects a result, recorded in every output and shown by `--version`."""

from __future__ import annotations

import platform
from importlib import metadata

from . import __version__
from .errors import UsageError, brief, opt

_PACKAGES = ("torch", "torchvision", "tensorly", "opt_einsum", "safetensors", "onnx", "onnxruntime", "typer", "rich")


def versions() -> dict[str, str]:
    found = {"tnncompress": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def environment() -> dict:
    import torch

    info = {"versions": versions(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def resolve_device(text: str) -> str:
    """"auto" (CUDA when there is one), "cpu", "cuda" or "cuda:N", checked against this machine."""
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu" or text.startswith("cuda"):
        if text.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"{opt('device')} {text}: CUDA is not available on this machine")
        return text
    raise UsageError(f"{opt('device')} {brief(text)}: use auto, cpu, cuda or cuda:N")
