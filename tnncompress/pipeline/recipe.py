"""Recipes: every option of `tnncompress run` as a versioned YAML document.

A recipe is read, merged with the command line (recipe < options given on the command line < `--set
key=value`), validated, and written back resolved into the output as `recipe.yaml`, so that
`tnncompress run --recipe DIR/recipe.yaml` repeats the run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..errors import UsageError

RECIPE_VERSION = 1
KD_MODES = ("none",)  # distillation modes this version knows


@dataclass
class Recipe:
    checkpoint: str | None = None
    arch: str | None = None
    trust_checkpoint: bool = False
    input_size: str | None = None  # "C,H,W"
    format: str = "mcp"
    rate: float | None = None
    rate_by: str = "params"
    modes: int = 3  # m of the reshaped formats
    ranks: str | None = None  # path of a ranks file (per-layer formats and ranks)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    data: str | None = None
    eval_limit: int | None = None
    batch_size: int = 256
    kd: str = "none"
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    onnx: bool = True
    deploy_form: str = "auto"  # per layer in ONNX: auto (measured), flops (cost model), dense or factors
    deploy_batch: int = 1
    latency: bool = True
    latency_batches: list[int] = field(default_factory=lambda: [1, 32])

    def to_yaml(self) -> str:
        body = {"version": RECIPE_VERSION, **dataclasses.asdict(self)}
        return ("# tnncompress recipe: repeat with `tnncompress run --recipe recipe.yaml`\n"
                + yaml.safe_dump(body, sort_keys=False))

    def check(self) -> Recipe:
        """Validate the values (not only their types); returns self."""
        from ..compress import RATE_BY
        from ..export.deploy import FORMS
        from ..formats import list_formats

        if self.checkpoint is None:
            raise UsageError("no checkpoint: give CHECKPOINT or a recipe with `checkpoint:`")
        if self.rate is not None and not 0 < self.rate <= 1:
            raise UsageError(f"rate {self.rate}: must be in (0, 1] (the fraction of parameters kept)")
        if self.rate is None and self.ranks is None:
            raise UsageError("give --rate (e.g. --rate 0.05) or a --ranks file")
        if self.format not in list_formats():
            raise UsageError(f"unknown format {self.format!r}; known: {', '.join(list_formats())}")
        for name, value, allowed in (("rate_by", self.rate_by, RATE_BY), ("kd", self.kd, KD_MODES),
                                     ("deploy_form", self.deploy_form, FORMS)):
            if value not in allowed:
                raise UsageError(f"{name} {value!r}: use one of {', '.join(allowed)}")
        for name in ("modes", "batch_size", "deploy_batch"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise UsageError(f"eval_limit must be at least 1, got {self.eval_limit}")
        if any(b < 1 for b in self.latency_batches):
            raise UsageError(f"latency_batches must be positive, got {self.latency_batches}")
        return self


_FIELDS = {f.name: f for f in fields(Recipe)}


def _check_type(key: str, value) -> object:
    """`value` converted to the field's type, or a UsageError that names the key."""
    hint = typing.get_type_hints(Recipe)[key]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for t in options:
        origin = typing.get_origin(t) or t
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(t)
            if all(isinstance(v, item) and not isinstance(v, bool) or (item is bool and isinstance(v, bool))
                   for v in value):
                return list(value)
        elif origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        elif origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif origin is bool and isinstance(value, bool):
            return value
        elif origin is str and isinstance(value, str):
            return value
        elif origin is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(t, "__name__", str(t)).replace("NoneType", "null") for t in options)
    raise UsageError(f"recipe key {key!r}: expected {names}, got {value!r}")


def recipe_from_mapping(mapping: dict, source: str = "recipe") -> dict:
    """Validated keys and values of a recipe mapping (the version key checked and removed)."""
    if not isinstance(mapping, dict):
        raise UsageError(f"{source}: a recipe is a YAML mapping of option: value")
    mapping = dict(mapping)
    version = mapping.pop("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise UsageError(f"{source}: recipe version {version!r}; this tnncompress reads version {RECIPE_VERSION}")
    unknown = sorted(set(mapping) - set(_FIELDS))
    if unknown:
        raise UsageError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"(known: {', '.join(_FIELDS)})")
    return {k: _check_type(k, v) for k, v in mapping.items()}


def read_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe not found: {path}")
    try:
        mapping = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return recipe_from_mapping(mapping or {}, str(path))


def parse_overrides(items: list[str]) -> dict:
    """`--set key=value` items; values are read as YAML (0.05 is a number, [a, b] a list)."""
    mapping = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value")
        try:
            mapping[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            mapping[key.strip()] = text
    return recipe_from_mapping(mapping, "--set")


def resolve(recipe_file: str | None, options: dict, overrides: list[str]) -> Recipe:
    """Defaults < recipe file < command-line options that were given (not None) < --set."""
    values: dict = read_recipe(recipe_file) if recipe_file else {}
    values.update(recipe_from_mapping({k: v for k, v in options.items() if v is not None}, "options"))
    values.update(parse_overrides(overrides))
    return Recipe(**values).check()
