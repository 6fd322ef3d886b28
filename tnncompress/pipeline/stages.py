"""What `tnncompress run` does around the stages of flow.py that needs the whole recipe: the inputs
loaded and checked before any work (model, splits, batch sizes, calibration pool, the BQN's operations),
and the export and latency stages' adapters (the latency table is the report's)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from torch import nn

from ..bayes import stage as bqn_stage
from ..calibrate import CalibrationPool, calibration_pool
from ..compress import (
    LayerChoice,
)
from ..compress import stage as compress_stage
from ..data import ClassificationData, DataSpec, load_data
from ..distill import Context
from ..errors import UsageError, opt
from ..evaluate import check_compatible, output_classes
from ..export import stage as export_stage
from ..export.stage import ONNX_FILE, Exported, Inputs, Quantized
from ..io import LoadedModel, load_model
from ..limits import check
from ..report import Latency, measure_latency
from .recipe import Recipe

log = logging.getLogger(__name__)


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


def select(recipe: Recipe, loaded: LoadedModel) -> list[LayerChoice]:
    return compress_stage.select(recipe.compress, loaded.model, loaded.input_size)


def check_bqn(recipe: Recipe, loaded: LoadedModel) -> None:
    """Refuse, before any work, a model the BQN stage cannot propagate moments through."""
    bqn_stage.check(recipe.bqn, loaded.model, select(recipe, loaded))


def export(recipe: Recipe, directory: Path, loaded: LoadedModel, student: nn.Module, codes: dict | None,
           pool: CalibrationPool | None, test: ClassificationData | None, ctx: Context) -> Exported:
    quantized = Quantized(codes, recipe.bqn.bits) if codes is not None else None
    inputs = Inputs(loaded, student, quantized, pool, test, recipe.evaluate, {"recipe": recipe.to_data()})
    return export_stage.export_all(recipe.export, directory, inputs, ctx)


def latency(recipe: Recipe, directory: Path, loaded: LoadedModel, exported: Exported) -> Latency:
    """The original against the compressed model as it deploys: in PyTorch as load(DIR) gives it, in
    onnxruntime as model.onnx (and model.int8.onnx)."""
    log.info("measuring latency")
    graph = (directory / ONNX_FILE).read_bytes() if exported.onnx is not None else None
    return measure_latency(loaded.model, exported.as_loaded, exported.original_graph, graph, loaded.input_size,
                           tuple(recipe.report.latency_batches), seed=recipe.seed, int8_graph=exported.int8_graph)

