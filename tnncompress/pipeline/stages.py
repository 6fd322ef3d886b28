"""The stages of `tnncompress run`, each a function of the recipe and the earlier stages' results.

They call into their packages and log what they did; `run.py` only sequences them.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..bayes import stage as bqn_stage
from ..bayes.activations import quantizers
from ..bayes.export import integer_weights, write_codes
from ..calibrate import CalibrationPool, calibration_pool, parse_memory, recalibrate_bn
from ..compress import (
    LayerChoice,
    LayerPlan,
    LayerResult,
    RefitResult,
    compress_model,
    data_aware_init,
    global_plans,
    plan_model,
    select_layers,
    speed_ranks,
)
from ..compress.select import Selection
from ..data import ClassificationData, DataSpec, load_data
from ..distill import Context
from ..distill.units import STUDENT_LAYERS
from ..errors import UsageError, opt
from ..evaluate import check_compatible, evaluate, output_classes
from ..export import FormDecision, deployable, operator_counts, to_onnx, verify, write_compressed
from ..export.choose import assignments, distinct_assignments, pick_assignment, time_models
from ..export.deploy import deployed, tensorized_inputs
from ..export.onnx_graph import INPUT, OUTPUT, folds, opset, session, to_int4
from ..export.quantize import OnnxModule, check_int8, quantize_int8
from ..export.rebuild import Dequantized, factor_initializers, with_factor_weights
from ..formats import planned
from ..inspect import call_order
from ..io import LoadedModel, load_model
from ..limits import check
from ..report import Accuracy, Latency, OnnxReport, Sizes, StageRecord, measure_latency
from ..report.model import Int8Report
from ..spectral.replace import Orthogonalised, orthogonalise
from .recipe import Recipe

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"


def load(recipe: Recipe, spec: DataSpec | None) -> tuple[LoadedModel, ClassificationData | None,
                                                          ClassificationData | None]:
    """The model, and the test split (for accuracy) and training split (for distillation), each checked
    against the model before any work starts."""
    m = recipe.model
    loaded = load_model(m.checkpoint, arch=m.arch, trust=m.trust_checkpoint, input_size=m.input_size)
    if loaded.arch.startswith("pickled"):
        raise UsageError(f"run needs a state-dict checkpoint and an architecture ({opt('arch')}) so the result can "
                         "be rebuilt without unpickling; this checkpoint holds a whole pickled module")
    log.info("architecture %s (%s)", loaded.arch, loaded.arch_how)
    test, train = splits(recipe, spec, loaded)
    return loaded, test, train


def splits(recipe: Recipe, spec: DataSpec | None, loaded: LoadedModel) -> tuple[ClassificationData | None,
                                                                                ClassificationData | None]:
    """The test split (for accuracy) and the training split (for distillation) of `spec`, each checked
    against the model; the model's input size becomes the data's when the recipe gives none."""
    m = recipe.model
    if spec is None:
        check_batches(recipe, loaded.input_size)
        return None, None
    classes = output_classes(loaded.model, loaded.input_size) if spec.kind == "synthetic" else None
    test = load_data(spec, "test", input_size=loaded.input_size, num_classes=classes)
    if m.input_size is None and test.input_size != loaded.input_size:
        loaded.input_size = test.input_size  # the input size defaults to the dataset's
    check_batches(recipe, loaded.input_size)
    check_compatible(loaded.model, test)
    log.info("data: %s, %d test samples", test.source, len(test))
    train = None
    if needs_training_data(recipe):
        train = load_data(spec, "train", input_size=loaded.input_size, num_classes=classes)
        check_compatible(loaded.model, train)
        log.info("training split: %s, %d samples%s", train.source, len(train),
                 "".join(f" ({n})" for n in train.notes if "subset" in n))
    return test, train


def check_batches(recipe: Recipe, input_size: tuple[int, ...]) -> None:
    """Refuse, before any work, a batch size whose inputs alone would exceed the batch_elements limit."""
    sizes = {"batch_size": [recipe.evaluate.batch_size], "deploy_batch": recipe.export.deploy_batch,
             "latency_batches": recipe.report.latency_batches if recipe.report.latency else [],
             "kd_batch_size": [recipe.distill.batch_size] if recipe.distill.enabled else [],
             "bqn_batch_size": [recipe.bqn.batch_size] if recipe.bqn.enabled else []}
    per_sample = math.prod(input_size)
    for key, batches in sizes.items():
        if batches:
            check("batch_elements", max(batches) * per_sample, f"{opt(key)} {max(batches):,} at input size "
                  f"{','.join(map(str, input_size))}")


def data_aware(recipe: Recipe) -> bool:
    return recipe.compress.init == "data" or (recipe.compress.init == "auto" and recipe.data.spec is not None)


def needs_training_data(recipe: Recipe) -> bool:
    """Distillation learns from the training split; every calibration step samples it."""
    return (recipe.distill.enabled or recipe.bqn.enabled or data_aware(recipe)
            or recipe.compress.allocate == "global" or recipe.export.quantize != "none") or (
        recipe.calibrate.recalibrate_bn and recipe.data.spec is not None)


def calibration(recipe: Recipe, train: ClassificationData | None) -> CalibrationPool | None:
    if train is None:
        return None
    pool = calibration_pool(train, recipe.calibrate.samples, recipe.seed)
    log.info("calibration pool: %s", pool.source)
    return pool


def plan(recipe: Recipe, loaded: LoadedModel, pool: CalibrationPool | None) -> tuple[list[LayerChoice],
                                                                                    list[LayerPlan]]:
    c = recipe.compress
    choices = select(recipe, loaded)
    if c.allocate == "global":
        if pool is None or c.ranks is not None or c.rate is None:
            raise UsageError(f"{opt('allocate')} global needs {opt('data')} (to measure each layer's errors) and "
                             f"{opt('rate')} (the total budget), and no {opt('ranks')} file")
        plans = global_plans(loaded.model, choices, c, pool, loaded.input_size, seed=recipe.seed)
    else:
        plans = plan_model(loaded.model, choices, c)
        if c.deploy_target != "size":
            infos = {choice.info.name: choice.info for choice in choices}
            plans = speed_ranks(loaded.model, plans, infos, c.rate, c.rate_by, c.modes, c.deploy_target,
                                loaded.input_size, recipe.export.deploy_batch)
    if not any(p.ranks for p in plans):
        raise UsageError("no layer can be compressed at this rate: " + (plans[0].reason if plans else
                                                                         "no layer is selected"))
    log.info("plan: %d layers to compress, %d left dense", sum(p.ranks is not None for p in plans),
             len(choices) - sum(p.ranks is not None for p in plans))
    return choices, plans


def select(recipe: Recipe, loaded: LoadedModel) -> list[LayerChoice]:
    c = recipe.compress
    return select_layers(loaded.model, loaded.input_size, c.include, c.exclude)


def orthogonal(recipe: Recipe, loaded: LoadedModel, choices: list[LayerChoice]
               ) -> tuple[nn.Module, list[Orthogonalised]]:
    """--spectral orthogonal: the selected convolutions become SC-Fac orthogonal convolutions."""
    names = [c.info.name for c in choices if c.status == Selection.COMPRESS]
    student, results = orthogonalise(loaded.model, names, loaded.input_size, seed=recipe.seed)
    done = [r for r in results if r.replaced]
    if not done:
        raise UsageError(f"{opt('spectral')} orthogonal: no selected layer can be an orthogonal convolution"
                         + (f" ({results[0].name}: {results[0].reason})" if results else " (none is selected)"))
    log.info("orthogonal convolutions: %d layers in %.1f s, median distance to the polar factor %.3f", len(done),
             sum(r.seconds for r in done), statistics.median(r.fit_distance for r in done))
    return student, results


def decompose(recipe: Recipe, loaded: LoadedModel, plans: list[LayerPlan], ctx: Context
              ) -> tuple[nn.Module, list[LayerResult]]:
    student, results = compress_model(loaded.model, plans, seed=recipe.seed, device=ctx.device,
                                      decomposer=recipe.compress.decomposer)
    log.info("Layer-Decomp: %d layers in %.1f s", len(results), sum(r.seconds for r in results))
    return student, results


def refit(recipe: Recipe, loaded: LoadedModel, student: nn.Module, pool: CalibrationPool) -> list[RefitResult]:
    """Data-aware Layer-Decomp: every compressed layer refitted to the teacher's output on the pool."""
    results = data_aware_init(loaded.model, student, pool, loaded.input_size, recipe.compress.init_inputs,
                              memory_budget=parse_memory(recipe.calibrate.cache_memory))
    log.info("data-aware Layer-Decomp: median relative output error %.3f -> %.3f",
             statistics.median(r.error_before for r in results), statistics.median(r.error_after for r in results))
    return results


def recalibrate(student: nn.Module, pool: CalibrationPool, refitted: list[RefitResult],
                input_size: tuple[int, int, int]) -> list[str]:
    """Batch-norm statistics re-estimated on the pool, for the norms whose input the compression changed
    (those called after the first compressed layer) and which no data-aware fit has set (their scale and
    shift already match the teacher's output: new statistics would change nothing they compute)."""
    order, _ = call_order(student, input_size)
    modules = dict(student.named_modules())
    first = next(i for i, n in enumerate(order) if isinstance(modules[n], STUDENT_LAYERS))
    fitted = {r.norm for r in refitted if r.norm}
    with planned(student, "rebuild"):  # as the data-aware fit: fast, and the same in every run
        names = recalibrate_bn(student, pool, only=set(order[first:]) - fitted)
    log.info("batch-norm recalibration: %d norms (%d set by the data-aware fit left as they are)", len(names),
             len(fitted))
    return names


def point(name: str, model: nn.Module, test: ClassificationData | None, recipe: Recipe, ctx: Context,
          seconds: float, cpu_seconds: float) -> StageRecord:
    """A stage's record, with the accuracy it leaves (on the curve's test samples)."""
    record = StageRecord(name, seconds, cpu_seconds)
    if test is not None:
        with planned(model, recipe.evaluate.plan):
            metrics = evaluate(model, test, device=ctx.device, limit=recipe.distill.eval_limit)
        record.top1, record.samples = metrics.top1, metrics.samples
        log.info("top-1 after %s: %.2f%% (%d test samples)", name, 100 * metrics.top1, metrics.samples)
    return record


def check_bqn(recipe: Recipe, loaded: LoadedModel) -> None:
    """Refuse, before any work, a model the BQN stage cannot propagate moments through."""
    bqn_stage.check(recipe.bqn, loaded.model, select(recipe, loaded))


def accuracy(recipe: Recipe, loaded: LoadedModel, student: nn.Module, test: ClassificationData | None,
             ctx: Context, layer_decomp: StageRecord) -> Accuracy:
    if test is None:
        return Accuracy()
    e = recipe.evaluate
    with planned(student, e.plan):
        metrics = {name: evaluate(model, test, batch_size=e.batch_size, device=ctx.device, limit=e.limit,
                                  description=f"evaluating ({name})")
                   for name, model in (("original", loaded.model), ("compressed", student))}
    loaded.model.cpu(), student.cpu()
    log.info("top-1 on %d test samples: original %.2f%%, compressed %.2f%%", metrics["original"].samples,
             100 * metrics["original"].top1, 100 * metrics["compressed"].top1)
    return Accuracy(data=test.source, samples=metrics["original"].samples, original=metrics["original"],
                    compressed=metrics["compressed"],
                    layer_decomp_top1=layer_decomp.top1)


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


def export_all(recipe: Recipe, directory: Path, loaded: LoadedModel, student: nn.Module, codes: dict | None,
               pool: CalibrationPool | None, test: ClassificationData | None, ctx: Context) -> Exported:
    """The weights and structure, model.onnx, the BQN's codes, model.int8.onnx when asked, and the sizes."""
    onnx, load_forms, as_loaded, original_graph = export(recipe, directory, loaded, student, codes)
    if codes is not None:
        write_codes(directory, codes, recipe.bqn.bits)
    int8_report, int8_graph = None, None
    if recipe.export.quantize == "int8":
        int8_report, int8_graph = int8(recipe, directory, loaded, student, onnx.forms, pool, test, ctx)
    return Exported(onnx, load_forms, as_loaded, original_graph, sizes(recipe, directory, original_graph),
                    int8_report, int8_graph)


def export(recipe: Recipe, directory: Path, loaded: LoadedModel, student: nn.Module, codes: dict | None = None
           ) -> tuple[OnnxReport | None, FormDecision | None, nn.Module, bytes | None]:
    """model.safetensors + structure.json with each layer's load form, and the checked ONNX graph with
    each layer's ONNX form; returns the ONNX report, the load-form decision, the model as load(DIR)
    gives it, and the original model's ONNX graph (for its size and latency). With a BQN's `codes`,
    model.onnx stores its quantized weights as integer levels (INT4 up to 4 bits) and scales."""
    x = recipe.export
    eager, load_forms = student, None
    if x.load_form != "factors":
        log.info("choosing each layer's form for load(DIR) (%s)", x.load_form)
        eager, load_forms = deployable(student, loaded.input_size, x.deploy_batch, x.load_form, runtime="pytorch")
    write_compressed(directory, student, loaded.arch, loaded.arch_kwargs, loaded.input_size,
                     metadata={"recipe": recipe.to_data()}, load_forms=load_forms.layers if load_forms else ())
    if not x.onnx:
        return None, load_forms, eager, None
    log.info("choosing each layer's ONNX form (%s)", x.deploy_form)
    deployed, forms = deployable(student, loaded.input_size, x.deploy_batch, x.deploy_form, runtime="onnxruntime")
    factors = x.onnx_weights == "factors"
    quantized = {}
    if factors and codes is not None:
        quantized = {name: Dequantized(levels, scale)
                     for name, (levels, scale) in integer_weights(codes, recipe.bqn.bits).items()}
    if factors:  # the same forms, their weights computed in the graph from the factors
        deployed = with_factor_weights(deployed, student, quantized)
    graph = to_onnx(deployed, loaded.input_size, fold=not factors)
    if quantized and recipe.bqn.bits <= 4:
        graph = to_int4(graph, factor_initializers(deployed))
    check = verify(graph, student, loaded.input_size, seed=recipe.seed, discontinuous=bool(quantizers(student)))
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


def int8(recipe: Recipe, directory: Path, loaded: LoadedModel, student: nn.Module, forms: FormDecision,
         pool: CalibrationPool, test: ClassificationData | None, ctx: Context) -> tuple[Int8Report, bytes]:
    """model.int8.onnx: the deployment graph with its weights stored, quantized to INT8 (export/quantize.py).
    INT8 kernels change which form is fastest, so model.onnx's forms, every layer dense and every layer its
    FLOP-optimal chain are each quantized and timed in onnxruntime, and the fastest kept (the float
    decision's rule); then checked against its float graph and evaluated on the test data in onnxruntime.
    Returns the report section and the graph (for the latency table)."""
    x, size = recipe.export, loaded.input_size
    inputs = tensorized_inputs(student, size)
    options = distinct_assignments(assignments(student, inputs, forms.layers, x.deploy_batch, first_name="float"))
    calibration = pool.head(x.int8_samples)
    floats, graphs = {}, {}
    for name, choices in options.items():
        log.info("INT8: quantizing the %s forms (%s calibration on %d images)", name, x.int8_calibration,
                 len(calibration))
        floats[name] = to_onnx(deployed(student, inputs, choices), size)
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
        e = recipe.evaluate
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


def sizes(recipe: Recipe, directory: Path, original_graph: bytes | None) -> Sizes:
    """The deployable files' bytes next to the original checkpoint's and its float32 ONNX graph's."""
    original = {"checkpoint": Path(recipe.model.checkpoint).stat().st_size}
    if original_graph is not None:
        original["onnx"] = len(original_graph)
    artifacts = {p.name: p.stat().st_size for p in sorted(directory.iterdir())
                 if p.is_file() and p.suffix in (".onnx", ".safetensors")}
    return Sizes(original, artifacts)


def latency(recipe: Recipe, directory: Path, loaded: LoadedModel, exported: Exported) -> Latency:
    """The original against the compressed model as it deploys: in PyTorch as load(DIR) gives it, in
    onnxruntime as model.onnx (and model.int8.onnx)."""
    log.info("measuring latency")
    graph = (directory / ONNX_FILE).read_bytes() if exported.onnx is not None else None
    return measure_latency(loaded.model, exported.as_loaded, exported.original_graph, graph, loaded.input_size,
                           tuple(recipe.report.latency_batches), seed=recipe.seed, int8_graph=exported.int8_graph)

