"""Architectures for state dicts: `torchvision:<name>`, `tnncompress:<name>`, `timm:<name>` (with the
timm extra), `package.module:factory`.

A state dict carries no architecture, so it is rebuilt from a named constructor and the state dict is
loaded strictly. The number of classes (and, for our zoo, input channels) is read off the state dict's
classifier and first convolution, so a ResNet-18 trained for 37 classes needs no extra option.
Without `--arch`, every candidate is built on the meta device (no memory, no init cost) and compared
key by key and shape by shape with the state dict.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import warnings
from dataclasses import dataclass
from functools import cache, lru_cache

import torch
from torch import nn

from .. import models as zoo
from ..errors import CheckpointError, UntrustedCheckpointError, UsageError, brief, opt
from ..limits import check
from . import timm_models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    source: str  # "torchvision" | "tnncompress" | "timm" | "python"
    name: str

    def __str__(self) -> str:
        return self.name if self.source == "python" else f"{self.source}:{self.name}"


def parse_arch(text: str, origin: str = opt("arch")) -> ArchSpec:
    """The architecture `text` names; `origin` says where it came from (an option, a file) in errors."""
    if not isinstance(text, str):
        raise UsageError(f"{origin} {brief(text)}: an architecture is a string")
    source, sep, name = text.strip().partition(":")
    if not sep or not source or not name:
        raise UsageError(f"{origin} {brief(text)}: use torchvision:NAME, tnncompress:NAME, timm:NAME or "
                         "package.module:factory")
    if source == "torchvision":
        if name not in _torchvision_names():
            raise UsageError(f"{origin} {brief(text)}: torchvision has no classification model {brief(name)}")
        return ArchSpec("torchvision", name)
    if source == "tnncompress":
        if name not in zoo.MODELS:
            raise UsageError(f"{origin} {brief(text)}: {zoo.MODELS.unknown(name)}")
        return ArchSpec("tnncompress", name)
    if source == "timm":
        timm_models.check_name(name, f"{origin} {brief(text)}")
        return ArchSpec("timm", name)
    return ArchSpec("python", text.strip())


def arch_from_file(text: str, origin: str, trust: bool, allow: str) -> ArchSpec:
    """The architecture a file names. A file may name registry architectures only: `module:factory`
    imports and calls code chosen by whoever wrote the file, so it needs the user's explicit trust
    (`allow` says how to give it)."""
    spec = parse_arch(text, origin)
    if spec.source == "python" and not trust:
        raise UntrustedCheckpointError(
            f"{origin} names the architecture {brief(text)}, which is code to import and call, not a "
            f"torchvision:, tnncompress: or timm: name; {allow}")
    return spec


ARCH_KWARGS = ("num_classes", "in_channels", "in_chans")  # the constructor arguments a file may set


def check_arch_kwargs(spec: ArchSpec, kwargs: object, origin: str) -> dict:
    """Constructor arguments read from a file: for registry architectures only the inferred ones, as
    positive integers (anything else could, e.g., ask torchvision to download weights)."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{origin}: arch_kwargs must be a mapping, got {brief(kwargs)}")
    if spec.source == "python":  # trusted code: its arguments are its own business
        return kwargs
    for key, value in kwargs.items():
        if key not in ARCH_KWARGS or not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1 << 20:
            raise CheckpointError(f"{origin}: arch_kwargs may only set {' and '.join(ARCH_KWARGS)} to positive "
                                  f"integers, got {brief(key)}: {brief(value)}")
    return kwargs


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


def _constructor(spec: ArchSpec):
    if spec.source == "torchvision":
        import torchvision.models as tvm

        return tvm.get_model_builder(spec.name)
    if spec.source == "tnncompress":
        return zoo.get_entry(spec.name).factory
    if spec.source == "timm":
        return timm_models.constructor(spec.name)
    module_name, _, attr = spec.name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{opt('arch')} {spec.name}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{opt('arch')} {spec.name}: {module_name} has no callable {attr!r}")
    return factory


def _base_kwargs(spec: ArchSpec) -> dict:
    """What every call of the constructor passes: torchvision's builders are told to load no weights
    (never download)."""
    return {"weights": None} if spec.source == "torchvision" else {}


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _instantiate(fn, kwargs: dict, device: str) -> nn.Module:
    # GoogLeNet and Inception warn about a future change of their init; the init is irrelevant here.
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore", FutureWarning)
        return fn(**kwargs)


def _first_last(model: nn.Module) -> tuple[str | None, str | None]:
    """Names of the first convolution and of the last classifier layer (Linear, or a 1x1 Conv)."""
    first = last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and first is None:
            first = name
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = name
    return first, last


def _kwargs_from_state(spec: ArchSpec, fn, state: dict[str, torch.Tensor]) -> dict:
    """Infer num_classes / in_channels from the state dict, for constructors that accept them."""
    kwargs: dict = {}
    default = _instantiate(fn, _base_kwargs(spec), "meta")
    first, last = _first_last(default)
    if last and f"{last}.weight" in state and _accepts(fn, "num_classes"):
        kwargs["num_classes"] = int(state[f"{last}.weight"].shape[0])
    if spec.source in ("tnncompress", "timm") and first and f"{first}.weight" in state:
        kwargs["in_channels" if spec.source == "tnncompress" else "in_chans"] = int(state[f"{first}.weight"].shape[1])
    return kwargs


def arch_kwargs(spec: ArchSpec, state: dict[str, torch.Tensor]) -> dict:
    """The constructor arguments (num_classes, in_channels) a state dict implies for this architecture."""
    return {} if spec.source == "python" else _kwargs_from_state(spec, _constructor(spec), state)


def build_model(spec: ArchSpec, state: dict[str, torch.Tensor] | None = None, device: str = "cpu",
                kwargs: dict | None = None) -> nn.Module:
    """Instantiate the architecture (no weights downloaded), with the constructor arguments `kwargs`,
    or those inferred from `state`."""
    fn = _constructor(spec)
    call = _base_kwargs(spec)
    if kwargs is not None:
        call.update(kwargs)
    elif state is not None:
        call.update(arch_kwargs(spec, state))
    kwargs = call
    try:
        model = _instantiate(fn, kwargs, device)
    except Exception as exc:
        raise CheckpointError(f"building {spec} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"architecture {spec}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def compare_state(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of `state` against `model`'s own state dict.

    BatchNorm's `num_batches_tracked` may be absent (older checkpoints omit it); it is not reported.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    return missing, unexpected, shapes


def _summarise(items: list[str], what: str) -> str:
    shown = ", ".join(brief(i, 120)[1:-1] for i in items[:3]) + (", ..." if len(items) > 3 else "")
    return f"{len(items)} {what} ({shown})"


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], spec: ArchSpec | str) -> None:
    """Raise CheckpointError naming the missing and unexpected keys and the shape mismatches."""
    missing, unexpected, shapes = compare_state(model, state)
    if missing or unexpected or shapes:
        parts = [_summarise(x, w) for x, w in ((missing, "missing keys"), (unexpected, "unexpected keys"),
                                              (shapes, "shape mismatches")) if x]
        raise CheckpointError(f"state dict does not fit {spec}: " + "; ".join(parts))


def load_into(model: nn.Module, state: dict[str, torch.Tensor], spec: ArchSpec | str) -> nn.Module:
    check_fits(model, state, spec)
    model.load_state_dict(state, strict=False)
    return model


def candidate_specs() -> list[ArchSpec]:
    return [ArchSpec("tnncompress", n) for n in zoo.list_models()] + \
           [ArchSpec("torchvision", n) for n in _torchvision_names()]


def _meta_fits(spec: ArchSpec, state: dict[str, torch.Tensor]) -> bool:
    fn = _constructor(spec)
    try:
        kwargs = _base_kwargs(spec)
        kwargs.update(_kwargs_from_state(spec, fn, state))
        model = _instantiate(fn, kwargs, "meta")
    except Exception:
        return False
    missing, unexpected, shapes = compare_state(model, state)
    return not (missing or unexpected or shapes)


def detect_arch(state: dict[str, torch.Tensor]) -> list[ArchSpec]:
    """Every known architecture the state dict fits exactly (keys and shapes); timm's (when installed)
    only when no other fits."""
    keys = set(state)
    matches = _matches(candidate_specs(), state, keys)
    if not matches and timm_models.available():
        names = timm_models.candidates(state)
        # a few stem and head names are shared by many timm models (63 for resnet10t's, 172 for EfficientNet's);
        # a state dict holding many such names (bait) would have hundreds built: refuse before building any
        check("detect_builds", len(names), f"detecting the architecture: {len(names):,} timm models have the stem "
              f"and classifier names of this state dict (name one with {opt('arch')} timm:NAME)")
        log.info("no torchvision or tnncompress model fits; trying %d timm models (--arch timm:NAME skips this)",
                 len(names))
        matches = _matches([ArchSpec("timm", n) for n in names], state, keys)
    return matches


def _matches(specs: list[ArchSpec], state: dict[str, torch.Tensor], keys: set[str]) -> list[ArchSpec]:
    matches = []
    for spec in specs:
        signature = _key_signature(spec)
        if signature is None or not signature <= keys:  # cheap filter before comparing shapes
            continue
        if _meta_fits(spec, state):
            matches.append(spec)
    return matches


@cache
def _meta_keys(spec: ArchSpec) -> frozenset[str] | None:
    try:
        fn = _constructor(spec)
        model = _instantiate(fn, _base_kwargs(spec), "meta")
        return frozenset(model.state_dict())
    except Exception:
        return None


def _key_signature(spec: ArchSpec) -> frozenset[str] | None:
    keys = _meta_keys(spec)
    return None if keys is None else frozenset(k for k in keys if not k.endswith("num_batches_tracked"))


def resolve_arch(arch: str | None, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 trust: bool = False, source: str = "the checkpoint") -> tuple[ArchSpec, str]:
    """Pick the architecture for `state`: the explicit one, the one in the file's metadata, or detection.
    Metadata may name registry architectures only, unless `trust`.

    Returns the spec and a sentence saying how it was chosen (shown to the user, kept in reports).
    """
    if arch:
        return parse_arch(arch), "given by the arch option"
    if metadata and metadata.get("arch"):
        spec = arch_from_file(metadata["arch"], f"{source}: its metadata", trust,
                              f"pass {opt('trust_checkpoint')} if you trust the file, or {opt('arch')} to name the "
                              "architecture")
        return spec, "read from the checkpoint's metadata"
    matches = detect_arch(state)
    if len(matches) == 1:
        return matches[0], f"detected from the state dict's keys and shapes: {matches[0]}"
    if not matches:
        timm = " and no timm model" if timm_models.available() else ""
        raise CheckpointError("could not detect the architecture: the state dict matches no torchvision "
                              f"classification model and no tnncompress model{timm}; pass {opt('arch')}")
    raise CheckpointError("the state dict fits several architectures: "
                          + ", ".join(map(str, matches)) + f"; pass {opt('arch')} to choose")
