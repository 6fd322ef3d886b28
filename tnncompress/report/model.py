"""The report of a run as typed records: report.json is `to_data(RunReport)`, and `read_report` gives
the records back, so that report.md, the command line and the scripts read attributes, not keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ..bayes.result import BqnReport
from ..calibrate.pool import PoolRecord
from ..distill import DistillResult
from ..evaluate.result import Accuracy, StageRecord
from ..export import FormDecision
from ..export.result import Int8Report, OnnxReport, Sizes
from ..io import read_json
from ..io.load import ModelRecord
from ..schema import from_data
from ..spectral.result import SpectralReport
from .gates import GateResult
from .latency import Latency

REPORT_SCHEMA = 3


class LayerStatus(StrEnum):
    """What was done to a layer (written to report.json as its value)."""

    COMPRESSED = "compressed"
    ORTHOGONAL = "orthogonal"  # --spectral orthogonal replaced it
    SKIPPED = "skipped"  # it cannot be compressed, or cannot meet the rate
    EXCLUDED = "excluded"  # by the user's patterns or the defaults


@dataclass
class LayerRow:
    """One conv or linear layer of the model, compressed or not."""

    name: str
    kind: str
    status: LayerStatus
    reason: str
    params_original: int
    params_compressed: int
    flops_original: int
    flops_compressed: int
    format: str | None = None
    ranks: dict[str, int] | None = None
    tensorization: dict | None = None
    rel_error: float | None = None  # relative reconstruction error of the kernel
    output_error: float | None = None  # relative output error on the calibration pool, weight-space Layer-Decomp
    output_error_refit: float | None = None  # ... after data-aware Layer-Decomp
    seconds: float | None = None  # of its Layer-Decomp
    deploy_form: str | None = None  # in the ONNX graph: "dense", "factors" or "factors:PLAN"
    load_form: str | None = None  # in load(DIR): the same, or "trainable factors"

    @property
    def rate(self) -> float | None:
        return self.params_compressed / self.params_original if self.status == LayerStatus.COMPRESSED else None


@dataclass
class Params:
    original: int
    compressed: int
    rate: float
    compressible_original: int  # of the layers that were compressed
    compressible_compressed: int
    compressible_rate: float | None


@dataclass
class Flops:
    original: int
    compressed: int
    note: str = "per sample at input_size, conv and linear layers, a multiply-add counted as 2"

    @property
    def ratio(self) -> float:
        return self.compressed / max(self.original, 1)


@dataclass
class RunReport:
    schema: int
    tnncompress_version: str
    versions: dict[str, str]
    model: ModelRecord  # the loaded checkpoint
    input_size: list[int]
    format: str
    formats_used: list[str]
    target_rate: float | None
    rate_by: str
    seed: int
    params: Params
    flops: Flops
    accuracy: Accuracy
    layers: list[LayerRow]
    recipe: dict  # the resolved recipe document
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, and "total"
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # the same in CPU time (all threads)
    stages: list[StageRecord] = field(default_factory=list)  # accuracy after each stage before distillation
    calibration: PoolRecord | None = None  # the calibration pool, when one was drawn
    warnings: list[str] = field(default_factory=list)
    distillation: DistillResult | None = None
    onnx: OnnxReport | None = None
    load_forms: FormDecision | None = None  # each layer's form in load(DIR), and the times it was chosen from
    latency: Latency | None = None
    spectral: SpectralReport | None = None
    bqn: BqnReport | None = None
    gates: list[GateResult] = field(default_factory=list)  # the recipe's gates against what was measured
    sizes: Sizes | None = None  # bytes of the artifacts next to the original's
    int8: Int8Report | None = None  # model.int8.onnx (--quantize int8)
    layers_compressed: int = 0
    threads: int | None = None  # PyTorch's intra-op threads (and onnxruntime's) during the run
    plans: dict[str, list] = field(default_factory=dict)  # every measured conv_einsum plan the run used

    def __post_init__(self) -> None:
        self.layers_compressed = sum(r.status == LayerStatus.COMPRESSED for r in self.layers)


def read_report(path: str | Path) -> RunReport:
    """A report.json back as records (schema 2 reports, before forms were timed per runtime, too)."""
    doc = read_json(path, "report")
    if isinstance(doc, dict) and doc.get("schema") == 2 and isinstance(doc.get("onnx"), dict):
        doc = {**doc, "onnx": _onnx_v2(doc["onnx"])}
    return from_data(RunReport, doc, str(path))


def _onnx_v2(onnx: dict) -> dict:
    """Schema 2's ONNX record: one batch size, per layer "dense" or "factors" and two times."""
    onnx = dict(onnx)
    batch = str(onnx.pop("deploy_batch", 1))
    layers = []
    for layer in onnx.pop("layers", []):
        layer = dict(layer)
        times = {"dense": layer.pop("ms_dense", None), "optimal": layer.pop("ms_factors", None)}
        layer["plan"] = "optimal" if layer.get("form") == "factors" else None
        layer["ms"] = {k: {batch: v} for k, v in times.items() if v is not None}
        layers.append(layer)
    onnx["forms"] = {"runtime": "onnxruntime", "batches": [int(batch)], "picked": onnx.pop("deploy_form", "auto"),
                     "layers": layers}
    return onnx
