"""What the export stage is told."""

from ..options import Section, option
from .deploy import FORMS
from .quantize import CALIBRATION


class ExportConfig(Section, name="export", title="Export"):
    onnx: bool = option(True, "Export model.onnx and check it against onnxruntime.", execution=True)
    deploy_form: str = option("auto", "Each layer's ONNX form (auto: the fastest, timed in onnxruntime).",
                              choices=FORMS, execution=True)
    deploy_batch: list[int] = option([1, 32], "Batch sizes the forms are timed at (per layer the geometric mean "
                                              "decides; the whole model's assignment is the one least slower "
                                              "than the fastest at any of them); repeatable.", minimum=1,
                                     execution=True)
    onnx_weights: str = option(
        "factors", "What model.onnx stores for each compressed layer: its factors (a layer deployed dense "
                   "rebuilds its kernel in the graph, which onnxruntime folds once when a session starts: the "
                   "file is the size of the factors and runs as the dense graph), or the dense kernels and "
                   "chain products themselves (for runtimes that do not fold constants).",
        choices=("factors", "dense"), execution=True)
    quantize: str = option("none", "Also write model.int8.onnx: static INT8 quantization by onnxruntime's tools "
                                   "(QDQ, per-channel weights), calibrated on the calibration pool (needs --data), "
                                   "checked, evaluated and timed in onnxruntime.", choices=("none", "int8"))
    int8_calibration: str = option("minmax", "How INT8 activation ranges are calibrated.", choices=CALIBRATION)
    int8_samples: int = option(512, "Calibration-pool images the INT8 ranges are calibrated on.", minimum=1)
    load_form: str = option("auto", "Each layer's form in load(DIR) (auto: the fastest, timed in PyTorch; "
                                    "factors: trainable).", choices=("auto", "dense", "factors"), execution=True)
