"""timm architectures (`--arch timm:NAME`), when timm is installed (the optional extra `tnncompress[timm]`).

Models are always built with `pretrained=False`: nothing is downloaded. Detection from a state dict
looks at timm only when no torchvision or tnncompress model fits, and builds (on the meta device) only
the timm models whose first convolution and classifier, as their pretrained configs name them, are in
the state dict.
"""

from __future__ import annotations

import functools
import importlib.util

from ..errors import UsageError, brief

EXTRA = "pip install 'tnncompress[timm]'"


def available() -> bool:
    return importlib.util.find_spec("timm") is not None


def _timm(origin: str):
    if not available():
        raise UsageError(f"{origin}: timm architectures need timm, which is not installed ({EXTRA})")
    import timm

    return timm


def check_name(name: str, origin: str) -> None:
    timm = _timm(origin)
    if name not in names(timm):
        close = [n for n in names(timm) if n.startswith(name.split("_")[0])][:5]
        raise UsageError(f"{origin}: timm has no model {brief(name)}" + (f" (did you mean {', '.join(close)}?)"
                                                                         if close else ""))


@functools.cache
def names(timm=None) -> frozenset[str]:
    timm = timm or _timm("timm")
    return frozenset(timm.list_models())


def constructor(name: str):
    """A factory taking the usual keyword arguments (num_classes, in_chans); never pretrained."""
    timm = _timm(f"timm:{name}")
    return functools.partial(timm.create_model, name, pretrained=False)


def candidates(state: dict) -> list[str]:
    """timm models whose first convolution weight (4-D) and classifier weights (2-D, or 4-D for a 1x1
    convolution) are in the state dict: what can be decided without building a model."""
    if not available():
        return []
    import timm

    def has(key: str, dims: tuple[int, ...]) -> bool:
        return key in state and getattr(state[key], "dim", lambda: -1)() in dims

    found = []
    for name in sorted(names(timm)):
        cfg = timm.models.get_pretrained_cfg(name)
        first = getattr(cfg, "first_conv", None)
        head = getattr(cfg, "classifier", None)
        heads = head if isinstance(head, (list, tuple)) else [head]
        if isinstance(first, str) and has(f"{first}.weight", (4,)) and all(
                isinstance(h, str) and has(f"{h}.weight", (2, 4)) for h in heads):
            found.append(name)
    return found


def first_conv(name: str) -> str | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return getattr(cfg, "first_conv", None)
