"""What the export stage reports: the ONNX graph (its forms, operators and check), the INT8 graph, and
the bytes of every deployable artifact next to the original's."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evaluate.metrics import Metrics
from .choose import FormDecision
from .onnx_graph import OnnxCheck
from .quantize import Int8Check


@dataclass
class OnnxReport:
    file: str
    opset: int
    operators: dict[str, int]
    check: OnnxCheck
    forms: FormDecision  # each layer's form in the graph, and the times it was chosen from
    factor_layers: int = 0  # layers exported as factor chains
    dense_layers: int = 0  # ... and as rebuilt dense kernels
    weights: str = "dense"  # "factors": the file stores the factors, the graph rebuilds what they make
    folded: bool | None = None  # with factor weights: onnxruntime's constant folding consumed every factor

    def __post_init__(self) -> None:
        self.factor_layers = sum(d.form == "factors" for d in self.forms.layers)
        self.dense_layers = sum(d.form == "dense" for d in self.forms.layers)


@dataclass
class Int8Report:
    """model.int8.onnx: how it was made, which deployment forms it quantizes, its check, and its accuracy
    evaluated in onnxruntime (its latency is the latency table's `onnxruntime_int8`)."""

    file: str
    calibration: str  # "minmax", "percentile" or "entropy"
    calibration_samples: int  # pool images the activation ranges were calibrated on
    assignment: str  # the forms quantized: "float" (model.onnx's), "dense" or "factors" (each timed in INT8)
    check: Int8Check
    bytes: int = 0
    accuracy: Metrics | None = None  # on the run's test samples, in onnxruntime
    models: dict[str, dict[str, float]] = field(default_factory=dict)  # assignment -> batch -> ms, in INT8


@dataclass
class Sizes:
    """Bytes of the deployable artifacts of the run, next to the original's."""

    original: dict[str, int]  # "checkpoint": the input file; "onnx": the original model exported as model.onnx is
    artifacts: dict[str, int]  # file name in the output directory -> bytes

    def ratio(self, artifact: str = "model.onnx") -> float | None:
        """The artifact's bytes over the original's float32 ONNX graph (None when either is missing)."""
        if artifact not in self.artifacts or not self.original.get("onnx"):
            return None
        return self.artifacts[artifact] / self.original["onnx"]
