"""`tnncompress.compress(model, ...)`: the run's stages on a model in memory, with no file read or written
but the data's: the compressed model and the report come back to the caller.

    import tnncompress
    result = tnncompress.compress(model, format="mcp", rate=0.1, data="fashion-mnist", kd="none")
    result.model            # the compressed nn.Module (tensorial layers, trainable)
    result.report.accuracy  # the same typed report `run` writes as report.json

It runs what `tnncompress run` runs up to evaluation (plan, Layer-Decomp, data-aware refit, norms,
spectral control, distillation, BQN), with the same options and defaults; the stages that exist to write
files (export, ONNX, latency of the written graphs, sizes, checkpoints to resume from) are not run. The
caller's model is not changed: the stages work on a copy.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data import parse_spec
from ..env import resolve_device
from ..errors import UsageError, opt
from ..io.checkpoint import Checkpoint
from ..io.load import LoadedModel, parse_input_size
from ..report import RunReport
from ..timing import Stopwatch
from ..train import setup as setup_processes
from . import flow, stages
from .flow import RunState, run_context, run_stages
from .recipe import Recipe
from .run import before_work, prepare, report_of

IN_MEMORY = "<in-memory model>"  # what the report names as the checkpoint
# options that only the file-writing run uses: an in-memory run refuses them rather than ignore them
FILE_OPTIONS = ("checkpoint", "out", "resume")


@dataclass
class CompressResult:
    model: nn.Module  # the compressed model
    report: RunReport


def compress(model: nn.Module, recipe: Recipe | None = None, *, data: str | None = None,
             input_size: str | tuple[int, int, int] | None = None, **options) -> CompressResult:
    """Compress `model` in memory. Options are `run`'s recipe keys (`format`, `rate`, `kd`, `kd_budget`,
    `calib_samples`, ... as in `Recipe.of`), or a whole `recipe` (its checkpoint is not read). `data`
    is a data spec as `--data` takes it; `input_size` ("C,H,W" or a tuple) is needed when no data gives it."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise UsageError("compress() runs in one process; under torchrun use `tnncompress run`")
    if not isinstance(model, nn.Module):
        raise UsageError(f"compress() takes an nn.Module, got {type(model).__name__}")
    recipe = _recipe(recipe, data, input_size, options)
    clock = Stopwatch()
    spec = parse_spec(recipe.data.spec) if recipe.data.spec else None
    ctx = setup_processes(resolve_device(recipe.device))
    prepare(recipe)
    with clock.stage("load"):
        loaded = _loaded(model, recipe)
        if loaded.input_size is None and (spec is None or spec.kind == "synthetic"):
            raise UsageError(f"compress() needs the model's input size: give {opt('input_size')} (C,H,W) or data")
        test, train = stages.splits(recipe, spec, loaded)
        pool = before_work(recipe, loaded, train)
    state = RunState(recipe, loaded, test, train, pool, run_context(recipe, ctx, None, False))  # no output
    run_stages(state, flow.SHARED + flow.MAIN, clock)
    return CompressResult(state.student, report_of(state, clock))


def _recipe(recipe: Recipe | None, data, input_size, options: dict) -> Recipe:
    given = sorted(set(options) & set(FILE_OPTIONS))
    if given:
        raise UsageError(f"compress() works in memory; {', '.join(given)} belong to `tnncompress run`")
    if isinstance(input_size, tuple):
        input_size = ",".join(map(str, input_size))
    if recipe is None:
        values = {**options, "data": data, "input_size": input_size}
        recipe = Recipe.of(checkpoint=IN_MEMORY, **{k: v for k, v in values.items() if v is not None})
    elif data is not None or input_size is not None or options:
        raise UsageError("compress(): give a recipe or options, not both")
    else:
        recipe = Recipe.from_values({**recipe.values(), "model.checkpoint": IN_MEMORY})
    recipe.check()
    if recipe.export.quantize == "int8":
        raise UsageError(f"{opt('quantize')} int8 quantises the exported ONNX graph: use `tnncompress run`")
    return recipe


def _loaded(model: nn.Module, recipe: Recipe) -> LoadedModel:
    """The caller's model as the stages take a loaded checkpoint: a copy (the stages set it to eval mode
    and move it between devices), named by a hash of its state."""
    teacher = copy.deepcopy(model).cpu().eval()
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    checkpoint = Checkpoint(Path(IN_MEMORY), "module", module=teacher, sha256=digest.hexdigest())
    input_size = parse_input_size(recipe.model.input_size) if recipe.model.input_size else None
    return LoadedModel(teacher, f"in-memory {type(model).__name__}", "given to compress()", checkpoint,
                       input_size)  # type: ignore[arg-type]  (None until the data gives it)

