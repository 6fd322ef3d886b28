"""`tnncompress run`: load -> select -> plan -> decompose -> [distil] -> evaluate -> export -> report.

Each stage is a call into its package; this module only threads the results through and writes the
output directory atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..compress import compress_model, plan_model, select_layers
from ..data import load_data, parse_spec
from ..env import resolve_device
from ..errors import UsageError
from ..evaluate import evaluate, output_classes
from ..export import deployable, operator_counts, to_onnx, verify, write_compressed
from ..export.onnx_graph import OPSET
from ..io import load_model
from ..report.build import build_report, layer_rows
from ..report.latency import measure_latency, slower_than_original
from ..report.markdown import render_markdown
from .recipe import Recipe
from .staging import check_destination, staged_directory

ONNX_FILE, REPORT_JSON, REPORT_MD, RECIPE_FILE = "model.onnx", "report.json", "report.md", "recipe.yaml"


@dataclass
class RunResult:
    directory: Path
    report: dict
    model: torch.nn.Module  # the compressed model, as saved


def default_out(recipe: Recipe) -> Path:
    rate = f"{recipe.rate:g}" if recipe.rate is not None else "ranks"
    return Path(f"{Path(recipe.checkpoint).stem}-{recipe.format}-{rate}")


def run(recipe: Recipe, force: bool = False, say: Callable[[str], None] = lambda _: None,
        show_progress: bool = True) -> RunResult:
    clock = {}
    started = time.perf_counter()
    out = Path(recipe.out) if recipe.out else default_out(recipe)
    check_destination(out, force)  # before any slow work
    device = resolve_device(recipe.device)
    data_spec = parse_spec(recipe.data) if recipe.data else None
    torch.manual_seed(recipe.seed)

    loaded = load_model(recipe.checkpoint, arch=recipe.arch, trust=recipe.trust_checkpoint,
                        input_size=recipe.input_size)
    if loaded.arch.startswith("pickled"):
        raise UsageError("run needs a state-dict checkpoint and an architecture (--arch) so the result can be "
                         "rebuilt without unpickling; this checkpoint holds a whole pickled module")
    say(f"architecture {loaded.arch} ({loaded.arch_how})")
    data = None
    if data_spec is not None:
        classes = output_classes(loaded.model, loaded.input_size) if data_spec.kind == "synthetic" else None
        data = load_data(data_spec, "test", input_size=loaded.input_size, num_classes=classes)
        if recipe.input_size is None and data.input_size != loaded.input_size:
            loaded.input_size = data.input_size  # the input size defaults to the dataset's
        say(f"data: {data.source}, {len(data)} test samples")
    input_size = loaded.input_size
    clock["load"] = time.perf_counter() - started

    t = time.perf_counter()
    choices = select_layers(loaded.model, input_size, recipe.include, recipe.exclude)
    plans = plan_model(loaded.model, choices, recipe.format, recipe.rate, recipe.rate_by, recipe.modes, recipe.ranks)
    if not any(p.ranks for p in plans):
        raise UsageError("no layer can be compressed at this rate: " + (plans[0].reason if plans else
                                                                         "no layer is selected"))
    clock["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    student, results = compress_model(loaded.model, plans, seed=recipe.seed, show_progress=show_progress,
                                      device=device)
    clock["layer_decomp"] = time.perf_counter() - t
    say(f"Layer-Decomp: {len(results)} layers in {clock['layer_decomp']:.1f} s")

    accuracy = {"original": None, "compressed": None, "data": None, "samples": None, "metrics": None}
    if data is not None:
        t = time.perf_counter()
        metrics = {name: evaluate(model, data, batch_size=recipe.batch_size, device=device, limit=recipe.eval_limit,
                                  show_progress=show_progress, description=f"evaluating ({name})")
                   for name, model in (("original", loaded.model), ("compressed", student))}
        loaded.model.cpu(), student.cpu()
        accuracy = {"original": metrics["original"]["top1"], "compressed": metrics["compressed"]["top1"],
                    "data": data.source, "samples": metrics["original"]["samples"], "metrics": metrics}
        clock["evaluate"] = time.perf_counter() - t

    with staged_directory(out, force) as staging:
        t = time.perf_counter()
        write_compressed(staging, student, loaded.arch, loaded.arch_kwargs, input_size,
                         metadata={"recipe": asdict(recipe)})
        onnx, graph, deploy = None, None, []
        if recipe.onnx:
            deployed, deploy = deployable(student, input_size, recipe.deploy_batch, recipe.deploy_form)
            graph = to_onnx(deployed, input_size)
            check = verify(graph, student, input_size, seed=recipe.seed)
            (staging / ONNX_FILE).write_bytes(graph)
            onnx = {"file": ONNX_FILE, "opset": OPSET, "operators": operator_counts(graph), **check,
                    "deploy_batch": recipe.deploy_batch, "deploy_form": recipe.deploy_form,
                    "factor_layers": sum(d.form == "factors" for d in deploy),
                    "dense_layers": sum(d.form == "dense" for d in deploy)}
        clock["export"] = time.perf_counter() - t
        latency, warnings = None, []
        if recipe.latency:
            t = time.perf_counter()
            say("measuring latency")
            original_graph = to_onnx(loaded.model, input_size) if graph is not None else None
            latency = measure_latency(loaded.model, student, original_graph, graph, input_size,
                                      tuple(recipe.latency_batches), seed=recipe.seed)
            warnings = slower_than_original(latency)
            clock["latency"] = time.perf_counter() - t
        clock["total"] = time.perf_counter() - started
        rows = layer_rows(choices, plans, results, deploy)
        report = build_report(recipe=asdict(recipe), loaded=loaded, original=loaded.model, compressed=student,
                              rows=rows, accuracy=accuracy, latency=latency, onnx=onnx, seconds=clock,
                              warnings=warnings)
        (staging / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
        (staging / REPORT_MD).write_text(render_markdown(report))
        (staging / RECIPE_FILE).write_text(recipe.to_yaml())
    return RunResult(out, report, student)
