"""Recipes: every option of `tnncompress run`, one section per stage, as a versioned YAML document.

A recipe is read, merged with the command line (defaults < recipe < options given on the command line
< `--set key=value`), validated, and written back resolved into the output as `recipe.yaml`, so that
`tnncompress run --recipe DIR/recipe.yaml` repeats the run.

Version 2 nests the options by stage (`compress: {format: mcp, rate: 0.1}`); the flat keys of version 1
(`format: mcp`, `kd_steps: 600`) are still read, in any version, as are dotted keys (`distill.steps`).
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path

import yaml

from ..bayes.config import BqnConfig
from ..calibrate import CalibrateConfig
from ..compress import CompressConfig
from ..data import DataConfig
from ..distill import DistillConfig
from ..errors import UsageError, brief, opt
from ..evaluate import EvaluateConfig
from ..export import ExportConfig
from ..io import ModelConfig, parse_yaml, read_yaml
from ..options import OptionSet, Section, option
from ..report import ReportConfig
from ..report.gates import GatesConfig, check_measurable
from ..schema import to_data
from ..spectral.config import SpectralConfig

RECIPE_VERSION = 2
READS = (1, 2)  # the versions this tnncompress reads
STAGES = (ModelConfig, DataConfig, EvaluateConfig, CalibrateConfig, CompressConfig, DistillConfig, SpectralConfig,
          BqnConfig, ExportConfig, ReportConfig, GatesConfig)


class Recipe(Section, title="Run"):
    """The run's own options (top-level keys of a recipe) and one configuration per stage."""

    out: str | None = option(None, "Output directory (default: CHECKPOINT-FORMAT-RATE[-KD]).", short="-o")
    seed: int = option(0, "Seed of the decompositions, batches and augmentation.")
    device: str = option("auto", "auto (CUDA when there is one), cpu, cuda or cuda:N.", execution=True)
    threads: int = option(0, "CPU threads of PyTorch and onnxruntime (0: the CPUs this process may use, by its "
                             "affinity and cgroup quota, or OMP_NUM_THREADS when set).", minimum=0, execution=True,
                          reuse=False)
    plan_cache: bool = option(True, "Keep measured conv_einsum plans across runs ($TNNCOMPRESS_PLAN_CACHE, else "
                                    "~/.cache/tnncompress/plans.json; safe to delete); off: measure in every run.",
                              execution=True, reuse=False)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    bqn: BqnConfig = field(default_factory=BqnConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)

    @classmethod
    def of(cls, **values) -> Recipe:
        """From flat or dotted keys: `Recipe.of(checkpoint="m.pt", format="cp", rate=0.1)` (then `.check()`)."""
        return cls.from_values(OPTIONS.flatten(values, "recipe"))

    @classmethod
    def from_values(cls, values: dict[str, object]) -> Recipe:
        """From {dotted name: checked value}."""
        return OPTIONS.build(values, cls, **{s.NAME: OPTIONS.build(values, s) for s in STAGES})

    def values(self) -> dict[str, object]:
        """{dotted name: value} of every option."""
        return {o.dotted: getattr(getattr(self, o.section) if o.section else self, o.name) for o in OPTIONS.options}

    def validate(self) -> None:
        if self.model.checkpoint is None:
            raise UsageError("no checkpoint: give CHECKPOINT or a recipe with `model: {checkpoint: ...}`")
        for stage in STAGES:
            getattr(self, stage.NAME).check()
        if not self.spectral.orthogonal:
            self.compress.needs_rate()
        if self.distill.enabled and self.data.spec is None:
            raise UsageError(f"{opt('kd')} {self.distill.algorithm} needs {opt('data')}: the training split is "
                             "what the student learns from")
        if self.bqn.enabled and self.data.spec is None:
            raise UsageError(f"{opt('bqn_bits')} needs {opt('data')}: the posterior is learned from the training split")
        if self.bqn.enabled and self.spectral.orthogonal:
            raise UsageError(f"{opt('bqn_bits')} quantises compressed layers' factors; {opt('spectral')} orthogonal "
                             "compresses nothing")
        if self.export.quantize != "none" and (self.data.spec is None or not self.export.onnx):
            raise UsageError(f"{opt('quantize')} {self.export.quantize} needs {opt('data')} (its ranges are "
                             f"calibrated on training images) and the ONNX export (drop {opt('no_onnx')})")
        check_measurable(self.gates, self.data.spec is not None, self.report.latency, self.report.latency_batches,
                         self.export.onnx, self.export.quantize == "int8")

    def to_data(self) -> dict:
        return {"version": RECIPE_VERSION, **to_data(self)}

    def to_yaml(self) -> str:
        return ("# tnncompress recipe: repeat with `tnncompress run --recipe recipe.yaml`\n"
                + yaml.safe_dump(self.to_data(), sort_keys=False))


OPTIONS = OptionSet([Recipe, *STAGES])


def mapping_values(mapping: object, source: str) -> dict[str, object]:
    """{dotted name: value} of a recipe document, of any version this tnncompress reads."""
    if not isinstance(mapping, dict):
        raise UsageError(f"{source}: a recipe is a YAML mapping of option: value")
    mapping = dict(mapping)
    version = mapping.pop("version", RECIPE_VERSION)
    if version not in READS:
        raise UsageError(f"{source}: recipe version {brief(version)}; this tnncompress reads versions "
                         f"{', '.join(map(str, READS))} (a newer tnncompress wrote it?)")
    return OPTIONS.flatten(mapping, source)


def read_recipe(path: str | Path) -> dict[str, object]:
    return mapping_values(read_yaml(path, "recipe") or {}, str(path))


def parse_overrides(items: list[str]) -> dict[str, object]:
    """`--set key=value` items; values are YAML (0.05 is a number, [a, b] a list), other text a string."""
    mapping = {}
    for key, sep, text in (item.partition("=") for item in items):
        if not sep or not key.strip():
            raise UsageError(f"{opt('set')} {brief(key + sep + text)}: expected key=value")
        try:
            mapping[key.strip()] = parse_yaml(text, f"--set {key.strip()}") if text.strip() else None
        except UsageError as exc:
            if "aliases" in str(exc):  # refused, not read as a string
                raise
            mapping[key.strip()] = text
    return OPTIONS.flatten(mapping, "--set")


def resolve(recipe_file: str | None, given: dict[str, object], overrides: list[str]) -> Recipe:
    """Defaults < recipe file < options given on the command line (flat keys) < --set."""
    values = read_recipe(recipe_file) if recipe_file else {}
    values |= OPTIONS.flatten(given, "options") | parse_overrides(overrides)
    return Recipe.from_values(values).check()
