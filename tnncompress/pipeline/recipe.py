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

from ..errors import UsageError, brief
from ..io.files import parse_yaml, read_yaml

RECIPE_VERSION = 1
KD_MODES = ("none", "seq", "e2e")  # no distillation, Seq-KD, E2E-KD


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
    seq_unit: str = "layer"  # Seq-KD unit: one compressed layer (+ its norm) or one residual block
    kd_steps: int | None = None  # budget of gradient updates (Seq-KD: shared by the units)
    kd_epochs: float | None = None  # ... or as passes over the training set (default 2 when neither)
    kd_finetune_steps: int = 0  # Seq-KD: end-to-end updates on the logits after the last unit
    kd_lr: float = 1e-3
    kd_warmup_steps: int = 0  # linear learning-rate warm-up at the start of each phase
    kd_decay_at: list[float] = field(default_factory=lambda: [0.5, 0.75])  # lr x0.1 at these fractions
    kd_loss: str = "mse"  # on the logits: mse, or kl (at kd_temperature)
    kd_temperature: float = 4.0
    kd_ce_weight: float = 0.0  # weight of cross-entropy on the labels, mixed into the logit loss
    kd_batch_size: int = 128
    kd_augment: bool = True
    kd_eval_limit: int | None = 2000  # test samples behind each point of the accuracy curve
    kd_plan: str = "measure"  # conv_einsum plans while training: measure (timed) or optimal (FLOPs)
    kd_checkpoint_every: int | None = None  # steps between checkpoints in a phase (default: an epoch)
    workers: int = 2  # data-loading workers (folder datasets)
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
        from ..distill import LOSSES, PLANS, SEQ_UNITS
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
                                     ("deploy_form", self.deploy_form, FORMS), ("seq_unit", self.seq_unit, SEQ_UNITS),
                                     ("kd_loss", self.kd_loss, LOSSES), ("kd_plan", self.kd_plan, PLANS)):
            if value not in allowed:
                raise UsageError(f"{name} {value!r}: use one of {', '.join(allowed)}")
        if self.kd != "none" and self.data is None:
            raise UsageError(f"--kd {self.kd} needs --data: the training split is what the student learns from")
        for name in ("kd_steps", "kd_eval_limit", "kd_checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("kd_epochs", "kd_lr", "kd_temperature"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.kd_ce_weight <= 1:
            raise UsageError(f"kd_ce_weight must be in [0, 1], got {self.kd_ce_weight}")
        if any(not 0 < f < 1 for f in self.kd_decay_at):
            raise UsageError(f"kd_decay_at: fractions of a phase in (0, 1), got {self.kd_decay_at}")
        if self.kd_finetune_steps < 0 or self.kd_warmup_steps < 0 or self.workers < 0:
            raise UsageError("kd_finetune_steps, kd_warmup_steps and workers cannot be negative")
        for name in ("modes", "batch_size", "deploy_batch", "kd_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise UsageError(f"eval_limit must be at least 1, got {self.eval_limit}")
        if any(b < 1 for b in self.latency_batches):
            raise UsageError(f"latency_batches must be positive, got {self.latency_batches}")
        return self


_FIELDS = {f.name: f for f in fields(Recipe)}
# Keys that change how a run executes but not what it computes: a resumed run may change them.
EXECUTION_KEYS = ("device", "workers", "onnx", "deploy_form", "deploy_batch", "latency", "latency_batches",
                  "eval_limit", "batch_size")


def distill_config(recipe: Recipe):
    """The distillation stage's configuration from a recipe's kd_* keys."""
    from ..distill import DistillConfig

    return DistillConfig(algorithm=recipe.kd, seq_unit=recipe.seq_unit, steps=recipe.kd_steps,
                         epochs=recipe.kd_epochs, finetune_steps=recipe.kd_finetune_steps, lr=recipe.kd_lr,
                         warmup_steps=recipe.kd_warmup_steps,
                         decay_at=list(recipe.kd_decay_at), loss=recipe.kd_loss, temperature=recipe.kd_temperature,
                         ce_weight=recipe.kd_ce_weight, batch_size=recipe.kd_batch_size, augment=recipe.kd_augment,
                         eval_limit=recipe.kd_eval_limit, workers=recipe.workers, seed=recipe.seed,
                         plan=recipe.kd_plan, checkpoint_every=recipe.kd_checkpoint_every)


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
            if item is float and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                return [float(v) for v in value]
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
    raise UsageError(f"recipe key {key!r}: expected {names}, got {brief(value)}")


def recipe_from_mapping(mapping: dict, source: str = "recipe") -> dict:
    """Validated keys and values of a recipe mapping (the version key checked and removed)."""
    if not isinstance(mapping, dict):
        raise UsageError(f"{source}: a recipe is a YAML mapping of option: value")
    mapping = dict(mapping)
    version = mapping.pop("version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise UsageError(f"{source}: recipe version {brief(version)}; this tnncompress reads version {RECIPE_VERSION}")
    unknown = sorted(map(str, set(mapping) - set(_FIELDS)))
    if unknown:
        shown = ", ".join(k if len(k) <= 40 else k[:40] + "..." for k in unknown[:5])
        shown += f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UsageError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {shown} "
                         f"(known: {', '.join(_FIELDS)})")
    return {k: _check_type(k, v) for k, v in mapping.items()}


def read_recipe(path: str | Path) -> dict:
    return recipe_from_mapping(read_yaml(path, "recipe") or {}, str(path))


def parse_overrides(items: list[str]) -> dict:
    """`--set key=value` items; values are read as YAML (0.05 is a number, [a, b] a list)."""
    mapping = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {brief(item)}: expected key=value")
        try:
            mapping[key.strip()] = parse_yaml(text, f"--set {key.strip()}") if text.strip() else None
        except UsageError as exc:
            if "aliases" in str(exc):  # refused, not read as a string
                raise
            mapping[key.strip()] = text
    return recipe_from_mapping(mapping, "--set")


def resolve(recipe_file: str | None, options: dict, overrides: list[str]) -> Recipe:
    """Defaults < recipe file < command-line options that were given (not None) < --set."""
    values: dict = read_recipe(recipe_file) if recipe_file else {}
    values.update(recipe_from_mapping({k: v for k, v in options.items() if v is not None}, "options"))
    values.update(parse_overrides(overrides))
    return Recipe(**values).check()
