"""The compression stages: which layers (select), their formats and ranks (plan: uniform, global or
measured for a runtime), Layer-Decomp of the kernels (decompose), the data-aware refit of each layer's
output (refit) and the batch-norm statistics re-estimated after it (recalibrate). Told by their options
section (`CompressConfig`); they return the records the report's layer rows are made from."""

from __future__ import annotations

import logging
import statistics

from torch import nn

from ..calibrate import CalibrationPool, recalibrate_bn
from ..errors import UsageError, opt
from ..formats import TensorizedLayer, planned
from ..inspect import call_order
from ..spectral.orthogonal import OrthogonalConv2d
from ..train import Context
from .allocate import global_plans
from .apply import LayerResult, compress_model
from .config import CompressConfig
from .data_aware import RefitResult, data_aware_init
from .plan import plan_model
from .ranks import LayerPlan
from .select import LayerChoice, select_layers
from .speed import speed_ranks

log = logging.getLogger(__name__)


def select(config: CompressConfig, teacher: nn.Module, input_size: tuple[int, int, int]) -> list[LayerChoice]:
    return select_layers(teacher, input_size, config.include, config.exclude)


def plan(config: CompressConfig, teacher: nn.Module, input_size: tuple[int, int, int], pool: CalibrationPool | None,
         ctx: Context, deploy_batch: list[int]) -> tuple[list[LayerChoice], list[LayerPlan]]:
    """Every layer's choice and, for the selected ones, format and ranks."""
    c = config
    choices = select(c, teacher, input_size)
    if c.allocate == "global":
        if pool is None or c.ranks is not None or c.rate is None:
            raise UsageError(f"{opt('allocate')} global needs {opt('data')} (to measure each layer's errors) and "
                             f"{opt('rate')} (the total budget), and no {opt('ranks')} file")
        plans = global_plans(teacher, choices, c, pool, input_size, seed=ctx.seed)
    else:
        plans = plan_model(teacher, choices, c)
        if c.deploy_target != "size":
            infos = {choice.info.name: choice.info for choice in choices}
            plans = speed_ranks(teacher, plans, infos, c.rate, c.rate_by, c.modes, c.deploy_target, input_size,
                                deploy_batch)
    if not any(p.ranks for p in plans):
        raise UsageError("no layer can be compressed at this rate: " + (plans[0].reason if plans else
                                                                         "no layer is selected"))
    log.info("plan: %d layers to compress, %d left dense", sum(p.ranks is not None for p in plans),
             len(choices) - sum(p.ranks is not None for p in plans))
    return choices, plans


def decompose(config: CompressConfig, teacher: nn.Module, plans: list[LayerPlan], ctx: Context
              ) -> tuple[nn.Module, list[LayerResult]]:
    student, results = compress_model(teacher, plans, seed=ctx.seed, device=ctx.device, decomposer=config.decomposer)
    log.info("Layer-Decomp: %d layers in %.1f s", len(results), sum(r.seconds for r in results))
    return student, results


def refit(config: CompressConfig, teacher: nn.Module, student: nn.Module, pool: CalibrationPool,
          input_size: tuple[int, int, int], ctx: Context) -> list[RefitResult]:
    """Data-aware Layer-Decomp: every compressed layer refitted to the teacher's output on the pool."""
    results = data_aware_init(teacher, student, pool, input_size, config.init_inputs, memory_budget=ctx.cache_memory)
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
    first = next(i for i, n in enumerate(order) if isinstance(modules[n], (TensorizedLayer, OrthogonalConv2d)))
    fitted = {r.norm for r in refitted if r.norm}
    with planned(student, "rebuild"):  # as the data-aware fit: fast, and the same in every run
        names = recalibrate_bn(student, pool, only=set(order[first:]) - fitted)
    log.info("batch-norm recalibration: %d norms (%d set by the data-aware fit left as they are)", len(names),
             len(fitted))
    return names
