"""Layer selection: which layers a run compresses, and why the others are left alone.

Defaults follow the dissertation: every conv and linear layer except the first convolution and the last
linear layer. `include` / `exclude` take glob patterns on module names ("layer3.*", "*.conv2") or
regular expressions prefixed with "re:". A pattern that matches no layer is an error, not a silent no-op.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from enum import StrEnum

from torch import nn

from ..errors import UsageError, brief, opt
from ..inspect import LayerInfo, layer_table


class Selection(StrEnum):
    """What selection decided for a layer (the report's LayerStatus says what was done)."""

    COMPRESS = "compress"
    SKIPPED = "skipped"  # it cannot be compressed
    EXCLUDED = "excluded"  # by the user's patterns or the defaults


@dataclass
class LayerChoice:
    info: LayerInfo
    status: Selection
    reason: str


def matches_pattern(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def check_patterns(patterns: list[str], names: list[str], option: str, what: str = "conv or linear layer") -> None:
    """Refuse a bad regular expression, and a pattern that matches none of `names`."""
    for p in patterns:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as exc:
                raise UsageError(f"{option} {brief(p)}: bad regular expression ({exc})") from None
        if not any(matches_pattern(p, n) for n in names):
            raise UsageError(f"{option} {brief(p)} matches no {what} "
                             f"(layers are named like {', '.join(names[:3])})")


def select_layers(model: nn.Module, input_size: tuple[int, int, int], include: list[str] | None = None,
                  exclude: list[str] | None = None, keep_first_last: bool = True) -> list[LayerChoice]:
    rows = layer_table(model, input_size, keep_first_last=False)
    names = [r.name for r in rows]
    include, exclude = include or [], exclude or []
    check_patterns(include, names, opt("include"))
    check_patterns(exclude, names, opt("exclude"))
    defaults = {r.name: r.reason for r in layer_table(model, input_size, keep_first_last=keep_first_last)}
    choices = []
    for r in rows:
        if r.reason:  # cannot be compressed at all
            choices.append(LayerChoice(r, Selection.SKIPPED, r.reason))
        elif any(matches_pattern(p, r.name) for p in exclude):
            choices.append(LayerChoice(r, Selection.EXCLUDED, "matches an exclude pattern"))
        elif include and not any(matches_pattern(p, r.name) for p in include):
            choices.append(LayerChoice(r, Selection.EXCLUDED, "not matched by an include pattern"))
        elif not include and defaults[r.name]:
            choices.append(LayerChoice(r, Selection.EXCLUDED, defaults[r.name]))
        else:
            choices.append(LayerChoice(r, Selection.COMPRESS, ""))
    return choices
