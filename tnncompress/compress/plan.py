"""The whole model's plan: for every selected layer, its format and ranks.

By default every selected layer gets `--format` with the ranks that meet `--rate`. A ranks file
overrides that per layer, for hand-tuned or mixed-format runs:

    # ranks.yaml: keys are layer names or glob patterns ("layer3.*"), as for --include
    layers:
      layer1.0.conv1: {format: mcp, ranks: {r: 12}}
      "layer3.*": {format: tt}            # this format, ranks from --rate
      layer4.1.conv2: {ranks: {r: 40}}    # --format, these ranks

A run's own report.json is also a ranks file: its compressed layers, with their formats and ranks,
are applied as they are.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import UsageError, brief, opt
from ..formats import FORMATS, get_format, tensorize
from ..io import read_yaml
from .config import CompressConfig
from .ranks import LayerPlan, kernel_shape, plan_layer
from .select import LayerChoice, Selection, matches_pattern

_ENTRY_KEYS = {"format", "ranks"}


def read_ranks_file(path: str | Path) -> dict[str, dict]:
    """pattern -> {"format": str | None, "ranks": dict | None}, validated for form (not yet for the model)."""
    doc = read_yaml(path, "ranks file")  # YAML reads JSON too
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if isinstance(layers, list):  # a report.json: its compressed layers
        layers = {str(r.get("name")): {"format": r.get("format"), "ranks": r.get("ranks")} for r in layers
                  if isinstance(r, dict) and r.get("status") == "compressed"}
    if not isinstance(layers, dict) or not layers:
        raise UsageError(f"{path}: expected a mapping `layers: {{layer name or pattern: {{format, ranks}}}}`")
    entries = {}
    for key, entry in layers.items():
        if not isinstance(entry, dict) or not set(entry) <= _ENTRY_KEYS or not entry:
            raise UsageError(f"{path}: layer {brief(key)}: expected {{format: NAME, ranks: {{name: int}}}}, "
                             f"got {brief(entry)}")
        fmt = entry.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise UsageError(f"{path}: layer {brief(key)}: {FORMATS.unknown(fmt)}")
        ranks = entry.get("ranks")
        if ranks is not None and (not isinstance(ranks, dict)
                                  or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                             for v in ranks.values())):
            raise UsageError(f"{path}: layer {brief(key)}: ranks must map rank names to positive integers, "
                             f"got {brief(ranks)}")
        entries[str(key)] = {"format": fmt, "ranks": ranks}
    return entries


def plan_model(model: nn.Module, choices: list[LayerChoice], config: CompressConfig) -> list[LayerPlan]:
    """One plan per layer chosen for compression (in model order): the format and ranks of the ranks
    file's entry that names it, else `config.format` with the ranks that meet `config.rate`."""
    entries = read_ranks_file(config.ranks) if config.ranks else {}
    selected = [c for c in choices if c.status == Selection.COMPRESS]
    for key in entries:
        if not any(matches_pattern(key, c.info.name) for c in selected):
            others = [c for c in choices if matches_pattern(key, c.info.name)]
            why = (f"it names {others[0].info.name}, which is {others[0].status}: {others[0].reason}" if others
                   else "no conv or linear layer has that name")
            raise UsageError(f"ranks file entry {brief(key)} matches no layer selected for compression ({why})")
    plans = []
    for choice in selected:
        entry = next((e for k, e in entries.items() if matches_pattern(k, choice.info.name)), {})
        layer_fmt = entry.get("format") or config.format
        ranks = entry.get("ranks")
        if ranks is None and config.rate is None:
            raise UsageError(f"layer {choice.info.name}: no ranks in the ranks file and no {opt('rate')} to "
                             "choose them")
        module = model.get_submodule(choice.info.name)
        if ranks is not None:
            shape, format_ = kernel_shape(module), get_format(layer_fmt)
            tz = tensorize(shape.t, shape.in_channels, config.modes) if format_.reshaped else None
            names = format_.rank_names(tz)
            if set(ranks) != set(names):
                raise UsageError(f"ranks file: layer {choice.info.name} ({layer_fmt}) needs ranks "
                                 f"{', '.join(names)}, got {', '.join(sorted(ranks)) or 'none'}")
        plans.append(plan_layer(module, choice.info, layer_fmt, config.rate, config.rate_by, ranks=ranks,
                                modes=config.modes, multiple=config.rank_multiple))
    return plans
