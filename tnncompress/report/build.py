"""The report of a run, assembled from the stages' results: per layer and for the whole model, with
everything needed to reproduce it."""

from __future__ import annotations

import torch
from torch import nn

from .. import __version__
from ..compress import LayerChoice, LayerPlan, LayerResult, RefitResult, Selection
from ..env import versions
from ..export import FormDecision
from ..io import LoadedModel
from .gates import judge
from .model import REPORT_SCHEMA, Accuracy, Flops, LayerRow, LayerStatus, OnnxReport, Params, RunReport


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_rows(choices: list[LayerChoice], plans: list[LayerPlan], results: list[LayerResult],
               onnx: OnnxReport | None = None, refitted: list[RefitResult] = (),
               load_forms: FormDecision | None = None, orthogonal=()) -> list[LayerRow]:
    """One row per conv / linear layer of the model, compressed or not, in model order (`orthogonal`:
    --spectral orthogonal's replacements, status "orthogonal" or "skipped" with the reason)."""
    plans_by = {p.name: p for p in plans}
    ortho_by = {r.name: r for r in orthogonal}
    refits = {r.name: r for r in refitted}
    results_by = {r.name: r for r in results}
    deploy_by = {d.name: d for d in onnx.forms.layers} if onnx is not None else {}
    load_by = {d.name: d for d in load_forms.layers} if load_forms is not None else {}
    rows = []
    for c in choices:
        info, plan = c.info, plans_by.get(c.info.name)
        status = LayerStatus.EXCLUDED if c.status == Selection.EXCLUDED else LayerStatus.SKIPPED  # until done
        row = LayerRow(info.name, info.kind, status, c.reason, info.params, info.params, info.flops, info.flops)
        if info.name in ortho_by:
            r = ortho_by[info.name]
            row.status = LayerStatus.ORTHOGONAL if r.replaced else LayerStatus.SKIPPED
            row.reason, row.seconds = r.reason, r.seconds
        if plan is not None:
            row.format = plan.format
            row.tensorization = plan.tensorization.to_dict() if plan.tensorization else None
            if plan.ranks is None:  # the rate cannot be met: the layer stays dense
                row.status, row.reason = LayerStatus.SKIPPED, plan.reason
            else:
                result = results_by[info.name]
                row.status, row.ranks = LayerStatus.COMPRESSED, plan.ranks
                row.reason = plan.reason or row.reason  # the global allocator says why these ranks
                row.params_compressed, row.flops_compressed = plan.params_compressed, plan.flops_compressed
                row.rel_error, row.seconds = result.rel_error, result.seconds
                if info.name in deploy_by:
                    row.deploy_form = deploy_by[info.name].label
                row.load_form = load_by[info.name].label if info.name in load_by else "trainable factors"
                if info.name in refits:
                    row.output_error = refits[info.name].error_before
                    row.output_error_refit = refits[info.name].error_after
        rows.append(row)
    return rows


def build_report(*, recipe, loaded: LoadedModel, original: nn.Module, compressed: nn.Module, rows: list[LayerRow],
                 accuracy: Accuracy, **sections) -> RunReport:
    """The report from the stages' results: the totals computed here from the models and the layer rows,
    every other section (`seconds`, `distillation`, `onnx`, `bqn`, ... as RunReport names them) as the
    stage returned it; the recipe's gates judged last, against the finished report."""
    done = [r for r in rows if r.status == LayerStatus.COMPRESSED]
    comp_orig = sum(r.params_original for r in done)
    comp_new = sum(r.params_compressed for r in done)
    p_orig, p_new = _params(original), _params(compressed)
    report = RunReport(
        schema=REPORT_SCHEMA, tnncompress_version=__version__, versions=versions(), model=loaded.describe(),
        input_size=list(loaded.input_size), format=recipe.compress.format,
        formats_used=sorted({r.format for r in done}), target_rate=recipe.compress.rate,
        rate_by=recipe.compress.rate_by, seed=recipe.seed,
        params=Params(p_orig, p_new, p_new / p_orig, comp_orig, comp_new, comp_new / comp_orig if comp_orig else None),
        flops=Flops(sum(r.flops_original for r in rows), sum(r.flops_compressed for r in rows)),
        accuracy=accuracy, layers=rows, recipe=recipe.to_data(), threads=torch.get_num_threads(), **sections)
    report.gates = judge(recipe.gates, report)
    return report
