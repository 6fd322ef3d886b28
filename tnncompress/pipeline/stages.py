"""The stages of `tnncompress run`, each a function of the recipe and the earlier stages' results.

They call into their packages and log what they did; `run.py` only sequences them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..compress import LayerChoice, LayerPlan, LayerResult, compress_model, plan_model, select_layers
from ..data import ClassificationData, DataSpec, load_data
from ..distill import Context, DistillResult, distil
from ..errors import UsageError, opt
from ..evaluate import check_compatible, evaluate, output_classes
from ..export import OPSET, deployable, operator_counts, to_onnx, verify, write_compressed
from ..formats import planned
from ..io import LoadedModel, load_model
from ..report import Accuracy, Latency, OnnxReport, measure_latency
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
    if spec is None:
        return loaded, None, None
    classes = output_classes(loaded.model, loaded.input_size) if spec.kind == "synthetic" else None
    test = load_data(spec, "test", input_size=loaded.input_size, num_classes=classes)
    if m.input_size is None and test.input_size != loaded.input_size:
        loaded.input_size = test.input_size  # the input size defaults to the dataset's
    check_compatible(loaded.model, test)
    log.info("data: %s, %d test samples", test.source, len(test))
    train = None
    if recipe.distill.enabled:
        train = load_data(spec, "train", input_size=loaded.input_size, num_classes=classes)
        check_compatible(loaded.model, train)
        log.info("distilling on %s, %d training samples%s", train.source, len(train),
                 "".join(f" ({n})" for n in train.notes if "subset" in n))
    return loaded, test, train


def plan(recipe: Recipe, loaded: LoadedModel) -> tuple[list[LayerChoice], list[LayerPlan]]:
    c = recipe.compress
    choices = select_layers(loaded.model, loaded.input_size, c.include, c.exclude)
    plans = plan_model(loaded.model, choices, c)
    if not any(p.ranks for p in plans):
        raise UsageError("no layer can be compressed at this rate: " + (plans[0].reason if plans else
                                                                         "no layer is selected"))
    log.info("plan: %d layers to compress, %d left dense", sum(p.ranks is not None for p in plans),
             len(choices) - sum(p.ranks is not None for p in plans))
    return choices, plans


def decompose(recipe: Recipe, loaded: LoadedModel, plans: list[LayerPlan], ctx: Context
              ) -> tuple[nn.Module, list[LayerResult]]:
    student, results = compress_model(loaded.model, plans, seed=recipe.seed, device=ctx.device,
                                      decomposer=recipe.compress.decomposer)
    log.info("Layer-Decomp: %d layers in %.1f s", len(results), sum(r.seconds for r in results))
    return student, results


def distillation(recipe: Recipe, loaded: LoadedModel, student: nn.Module, train, test, ctx: Context,
                 checkpoints: Path, resume: bool, on_checkpoint) -> DistillResult:
    # The checkpoints stay until the output is in place: an interrupt during evaluation or export
    # resumes from the distilled student instead of distilling again.
    checkpoints.mkdir(exist_ok=True)
    result = distil(loaded.model, student, train, test, loaded.input_size, recipe.distill, ctx, seed=recipe.seed,
                    workers=recipe.data.workers, checkpoint_dir=checkpoints, resume=resume,
                    on_checkpoint=on_checkpoint)
    loaded.model.cpu(), student.cpu()
    return result


def accuracy(recipe: Recipe, loaded: LoadedModel, student: nn.Module, test: ClassificationData | None,
             ctx: Context, distilled: DistillResult | None) -> Accuracy:
    if test is None:
        return Accuracy()
    e = recipe.evaluate
    with planned(student, "measure"):  # FLOP-optimal chains are slow on small layers
        metrics = {name: evaluate(model, test, batch_size=e.batch_size, device=ctx.device, limit=e.limit,
                                  description=f"evaluating ({name})")
                   for name, model in (("original", loaded.model), ("compressed", student))}
    loaded.model.cpu(), student.cpu()
    log.info("top-1 on %d test samples: original %.2f%%, compressed %.2f%%", metrics["original"].samples,
             100 * metrics["original"].top1, 100 * metrics["compressed"].top1)
    return Accuracy(data=test.source, samples=metrics["original"].samples, original=metrics["original"],
                    compressed=metrics["compressed"],
                    layer_decomp_top1=distilled.curve[0].top1 if distilled else metrics["compressed"].top1)


def export(recipe: Recipe, directory: Path, loaded: LoadedModel, student: nn.Module) -> OnnxReport | None:
    """model.safetensors + structure.json, and the checked ONNX graph."""
    write_compressed(directory, student, loaded.arch, loaded.arch_kwargs, loaded.input_size,
                     metadata={"recipe": recipe.to_data()})
    x = recipe.export
    if not x.onnx:
        return None
    deployed, forms = deployable(student, loaded.input_size, x.deploy_batch, x.deploy_form)
    graph = to_onnx(deployed, loaded.input_size)
    check = verify(graph, student, loaded.input_size, seed=recipe.seed)
    (directory / ONNX_FILE).write_bytes(graph)
    report = OnnxReport(ONNX_FILE, OPSET, operator_counts(graph), check, x.deploy_batch, x.deploy_form, forms)
    log.info("ONNX: %d layers as factor chains, %d dense; max |onnxruntime - PyTorch| %.2g", report.factor_layers,
             report.dense_layers, check.max_abs_error)
    return report


def latency(recipe: Recipe, directory: Path, loaded: LoadedModel, student: nn.Module,
            onnx: OnnxReport | None) -> Latency:
    log.info("measuring latency")
    original_graph = to_onnx(loaded.model, loaded.input_size) if onnx is not None else None
    graph = (directory / ONNX_FILE).read_bytes() if onnx is not None else None
    return measure_latency(loaded.model, student, original_graph, graph, loaded.input_size,
                           tuple(recipe.report.latency_batches), seed=recipe.seed)

