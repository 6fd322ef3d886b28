"""The export stage: model.safetensors and structure.json (each layer's load form), model.onnx (each
layer's ONNX form, checked against PyTorch), the BQN's integer codes, model.int8.onnx when asked, and the
bytes of each next to the original's. Told by its own options section (`ExportConfig`); returns its
report sections."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..bayes.activations import quantizers
from ..bayes.export import integer_weights, write_codes
from ..calibrate import CalibrationPool
from ..data import ClassificationData
from ..evaluate import evaluate
from ..evaluate.config import EvaluateConfig
from ..io import LoadedModel
from ..train import Context
from .artifacts import write_compressed
from .choose import FormDecision, assignments, deployable, distinct_assignments, pick_assignment, time_models
from .config import ExportConfig
from .deploy import deployed, tensorized_inputs
from .onnx_graph import INPUT, OUTPUT, folds, operator_counts, opset, session, to_int4, to_onnx, verify
from .quantize import OnnxModule, check_int8, quantize_int8
from .rebuild import Dequantized, factor_initializers, with_factor_weights
from .result import Int8Report, OnnxReport, Sizes

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"


@dataclass
class Exported:
    """What the export stage wrote and measured: each section of the report it fills, and what the
    latency stage times."""

    onnx: OnnxReport | None
    load_forms: FormDecision | None
    as_loaded: nn.Module  # the model as load(DIR) gives it
    original_graph: bytes | None  # the original model's ONNX graph
    sizes: Sizes
    int8: Int8Report | None = None
    int8_graph: bytes | None = None


@dataclass
class Quantized:
    """A BQN's MAP network as integer codes (levels and scales per tensor) at `bits`."""

    codes: dict
    bits: int


@dataclass
class Inputs:
    """What export writes from: the original (loaded) and compressed models, the BQN's codes if any, the
    calibration pool and test data INT8 needs, how it evaluates, and the recipe to record."""

    loaded: LoadedModel
    student: nn.Module
    quantized: Quantized | None = None
    pool: CalibrationPool | None = None
    test: ClassificationData | None = None
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    metadata: dict = field(default_factory=dict)  # kept in structure.json (the recipe)


def export_all(x: ExportConfig, directory: Path, inputs: Inputs, ctx: Context) -> Exported:
    """The weights and structure, model.onnx, the BQN's codes, model.int8.onnx when asked, and the sizes."""
    onnx, load_forms, as_loaded, original_graph = export(x, directory, inputs, ctx.seed)
    if inputs.quantized is not None:
        write_codes(directory, inputs.quantized.codes, inputs.quantized.bits)
    int8_report, int8_graph = None, None
    if x.quantize == "int8":
        int8_report, int8_graph = int8(x, directory, inputs, onnx.forms, ctx)
    return Exported(onnx, load_forms, as_loaded, original_graph, sizes(inputs.loaded, directory, original_graph),
                    int8_report, int8_graph)


def export(x: ExportConfig, directory: Path, inputs: Inputs, seed: int = 0
           ) -> tuple[OnnxReport | None, FormDecision | None, nn.Module, bytes | None]:
    """model.safetensors + structure.json with each layer's load form, and the checked ONNX graph with
    each layer's ONNX form; returns the ONNX report, the load-form decision, the model as load(DIR)
    gives it, and the original model's ONNX graph (for its size and latency). With a BQN's `codes`,
    model.onnx stores its quantized weights as integer levels (INT4 up to 4 bits) and scales."""
    loaded, student, quantized = inputs.loaded, inputs.student, inputs.quantized
    eager, load_forms = student, None
    if x.load_form != "factors":
        log.info("choosing each layer's form for load(DIR) (%s)", x.load_form)
        eager, load_forms = deployable(student, loaded.input_size, x.deploy_batch, x.load_form, runtime="pytorch")
    write_compressed(directory, student, loaded.arch, loaded.arch_kwargs, loaded.input_size,
                     metadata=inputs.metadata, load_forms=load_forms.layers if load_forms else ())
    if not x.onnx:
        return None, load_forms, eager, None
    log.info("choosing each layer's ONNX form (%s)", x.deploy_form)
    deployed, forms = deployable(student, loaded.input_size, x.deploy_batch, x.deploy_form, runtime="onnxruntime")
    factors = x.onnx_weights == "factors"
    weights = {}
    if factors and quantized is not None:
        weights = {name: Dequantized(levels, scale)
                   for name, (levels, scale) in integer_weights(quantized.codes, quantized.bits).items()}
    if factors:  # the same forms, their weights computed in the graph from the factors
        deployed = with_factor_weights(deployed, student, weights)
    graph = to_onnx(deployed, loaded.input_size, fold=not factors)
    if weights and quantized.bits <= 4:
        graph = to_int4(graph, factor_initializers(deployed))
    check = verify(graph, student, loaded.input_size, seed=seed, discontinuous=bool(quantizers(student)))
    folded = folds(graph, factor_initializers(deployed)) if factors else None
    if folded is False:
        log.warning("onnxruntime did not fold the factors of model.onnx into the weights they make: it computes "
                    "them at every call (--onnx-weights dense stores them)")
    (directory / ONNX_FILE).write_bytes(graph)
    report = OnnxReport(ONNX_FILE, opset(graph), operator_counts(graph), check, forms, weights=x.onnx_weights,
                        folded=folded)
    log.info("ONNX: %d layers as factor chains, %d dense (%s), %s weights, %d bytes; max |onnxruntime - PyTorch| "
             "%.2g", report.factor_layers, report.dense_layers, forms.picked, x.onnx_weights, len(graph),
             check.max_abs_error)
    return report, load_forms, eager, to_onnx(loaded.model, loaded.input_size)


INT8_FILE = "model.int8.onnx"
CHECK_IMAGES = 256  # pool images the INT8 graph is checked on


def int8(x: ExportConfig, directory: Path, inputs: Inputs, forms: FormDecision, ctx: Context
         ) -> tuple[Int8Report, bytes]:
    """model.int8.onnx: the deployment graph with its weights stored, quantized to INT8 (export/quantize.py).
    INT8 kernels change which form is fastest, so model.onnx's forms, every layer dense and every layer its
    FLOP-optimal chain are each quantized and timed in onnxruntime, and the fastest kept (the float
    decision's rule); then checked against its float graph and evaluated on the test data in onnxruntime.
    Returns the report section and the graph (for the latency table)."""
    student, pool, test, size, e = inputs.student, inputs.pool, inputs.test, inputs.loaded.input_size, inputs.evaluate
    layer_inputs = tensorized_inputs(student, size)
    options = distinct_assignments(assignments(student, layer_inputs, forms.layers, x.deploy_batch,
                                               first_name="float"))
    calibration = pool.head(x.int8_samples)
    floats, graphs = {}, {}
    for name, choices in options.items():
        log.info("INT8: quantizing the %s forms (%s calibration on %d images)", name, x.int8_calibration,
                 len(calibration))
        floats[name] = to_onnx(deployed(student, layer_inputs, choices), size)
        graphs[name] = quantize_int8(floats[name], (b.numpy() for b in calibration.batches(64)), x.int8_calibration)
    ms = {}
    if len(graphs) > 1:
        runners = {name: _session_runner(g) for name, g in graphs.items()}
        ms = time_models(runners, size, x.deploy_batch, "onnxruntime", min_time=0.3)
    picked = pick_assignment(ms) if ms else next(iter(graphs))
    check = check_int8(graphs[picked], floats[picked], pool.head(CHECK_IMAGES).images.numpy())
    (directory / INT8_FILE).write_bytes(graphs[picked])
    accuracy = None
    if test is not None:
        accuracy = evaluate(OnnxModule(graphs[picked]), test, batch_size=e.batch_size, limit=e.limit,
                            description="evaluating (INT8, onnxruntime)")
    log.info("INT8: %s forms, %d bytes, labels agree with float on %.1f%% of %d pool images%s", picked,
             len(graphs[picked]), 100 * check.agreement, check.samples,
             f"; top-1 {100 * accuracy.top1:.2f}% in onnxruntime" if accuracy else "")
    return Int8Report(INT8_FILE, x.int8_calibration, len(calibration), picked, check, len(graphs[picked]), accuracy,
                      ms), graphs[picked]


def _session_runner(graph: bytes):
    sess = session(graph)
    return lambda x: sess.run([OUTPUT], {INPUT: x})


def sizes(loaded: LoadedModel, directory: Path, original_graph: bytes | None) -> Sizes:
    """The deployable files' bytes next to the original checkpoint's and its float32 ONNX graph's."""
    original = {"checkpoint": Path(loaded.checkpoint.path).stat().st_size}
    if original_graph is not None:
        original["onnx"] = len(original_graph)
    artifacts = {p.name: p.stat().st_size for p in sorted(directory.iterdir())
                 if p.is_file() and p.suffix in (".onnx", ".safetensors")}
    return Sizes(original, artifacts)
