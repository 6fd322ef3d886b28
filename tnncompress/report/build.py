"""report.json: what a run did, per layer and for the whole model, and how to reproduce it."""

from __future__ import annotations

from torch import nn

from .. import __version__
from ..compress import LayerChoice, LayerPlan, LayerResult
from ..env import versions
from ..export.deploy import DeployChoice

REPORT_SCHEMA = 1


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_rows(choices: list[LayerChoice], plans: list[LayerPlan], results: list[LayerResult],
               deploy: list[DeployChoice]) -> list[dict]:
    """One row per conv / linear layer of the model, compressed or not, in model order."""
    plans_by = {p.name: p for p in plans}
    results_by = {r.name: r for r in results}
    deploy_by = {d.name: d for d in deploy}
    rows = []
    for c in choices:
        info, plan = c.info, plans_by.get(c.info.name)
        row = {"name": info.name, "kind": info.kind, "status": c.status, "reason": c.reason, "format": None,
               "ranks": None, "tensorization": None, "params_original": info.params,
               "params_compressed": info.params, "flops_original": info.flops, "flops_compressed": info.flops,
               "rel_error": None, "seconds": None, "deploy_form": None}
        if plan is not None:
            row["format"] = plan.format
            row["tensorization"] = plan.tensorization.to_dict() if plan.tensorization else None
            if plan.ranks is None:  # the rate cannot be met: the layer stays dense
                row.update(status="skipped", reason=plan.reason)
            else:
                result = results_by[info.name]
                row.update(status="compressed", ranks=plan.ranks, params_compressed=plan.params_compressed,
                           flops_compressed=plan.flops_compressed, rel_error=result.rel_error,
                           seconds=result.seconds)
                if info.name in deploy_by:
                    row["deploy_form"] = deploy_by[info.name].form
        rows.append(row)
    return rows


def build_report(*, recipe: dict, loaded, original: nn.Module, compressed: nn.Module, rows: list[dict],
                 accuracy: dict, latency: dict | None, onnx: dict, seconds: dict, warnings: list[str],
                 distillation: dict | None = None) -> dict:
    done = [r for r in rows if r["status"] == "compressed"]
    comp_orig = sum(r["params_original"] for r in done)
    comp_new = sum(r["params_compressed"] for r in done)
    p_orig, p_new = _params(original), _params(compressed)
    return {
        "schema": REPORT_SCHEMA,
        "tnncompress_version": __version__,
        "versions": versions(),
        "format": recipe["format"],
        "formats_used": sorted({r["format"] for r in done}),
        "target_rate": recipe["rate"],
        "rate_by": recipe["rate_by"],
        "seed": recipe["seed"],
        "model": loaded.describe(),
        "input_size": list(loaded.input_size),
        "params": {"original": p_orig, "compressed": p_new, "rate": p_new / p_orig,
                   "compressible_original": comp_orig, "compressible_compressed": comp_new,
                   "compressible_rate": comp_new / comp_orig if comp_orig else None},
        "flops": {"original": sum(r["flops_original"] for r in rows),
                  "compressed": sum(r["flops_compressed"] for r in rows),
                  "note": "per sample at input_size, conv and linear layers, a multiply-add counted as 2"},
        "layers_compressed": len(done),
        "latency": latency,
        "accuracy": accuracy,
        "distillation": distillation,
        "onnx": onnx,
        "seconds": seconds,
        "warnings": warnings,
        "recipe": recipe,
        "layers": rows,
    }
