"""report.md: the report.json of a run, for people."""

from __future__ import annotations


def _num(n: float | int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ranks(r: dict | None) -> str:
    return "-" if not r else " ".join(f"{k}={v}" for k, v in r.items())


def _distillation(d: dict, acc: dict) -> list[str]:
    name = {"seq": "Seq-KD", "e2e": "E2E-KD"}[d["algorithm"]]
    b = d["budget"]
    lines = ["", f"## Distillation ({name})", "",
             f"{d['updates']} gradient updates of batch {b['batch_size']} ({b['epochs']:.2f} epochs of "
             f"{d['train']['source']}, {d['train']['samples']} samples) on {d['device']}"
             + (f", {d['world_size']} processes" if d["world_size"] > 1 else "") + "; Layer-Decomp alone: "
             f"{_pct(acc.get('layer_decomp'))} ({d['curve'][0].get('samples')} test samples), after distillation: "
             f"{_pct(acc.get('compressed'))} ({acc.get('samples')} test samples).", "",
             "| after | updates | top-1 (curve samples) |", "|---|---:|---:|"]
    lines += [f"| {p['after']} | {p['updates']} | {_pct(p['top1'])} |" for p in d["curve"]]
    lines += ["", "| phase | steps | trained params | first loss | mean loss | images/s | lr reductions |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {u['phase']} | {u['steps']} | {_num(u['trained_params'])} | {u['first_loss'] or 0:.4g} | "
              f"{u['mean_loss']:.4g} | {u['images_per_s']:.0f} | {u['lr_reductions']} |" for u in d["units"]]
    return lines


def render_markdown(report: dict) -> str:
    p, f, acc = report["params"], report["flops"], report["accuracy"]
    target = report["target_rate"]
    lines = [f"# tnncompress report: {report['model']['checkpoint']}", "",
             f"- architecture: `{report['model']['arch']}`, input size {report['input_size']}",
             f"- format: `{report['format']}`" + (f" (layers use {', '.join(report['formats_used'])})"
                                                  if report["formats_used"] != [report["format"]] else ""),
             f"- target rate: {target if target is not None else 'from the ranks file'} "
             f"(by {report['rate_by']}), seed {report['seed']}",
             f"- tnncompress {report['tnncompress_version']}, torch {report['versions'].get('torch')}",
             "", "## Summary", "", "| | original | compressed | ratio |", "|---|---:|---:|---:|",
             f"| parameters (model) | {_num(p['original'])} | {_num(p['compressed'])} | {p['rate']:.4f} |",
             f"| parameters (compressed layers) | {_num(p['compressible_original'])} | "
             f"{_num(p['compressible_compressed'])} | "
             f"{p['compressible_rate']:.4f} |" if p["compressible_rate"] is not None else
             "| parameters (compressed layers) | - | - | - |",
             f"| FLOPs per sample | {_num(f['original'])} | {_num(f['compressed'])} | "
             f"{f['compressed'] / max(f['original'], 1):.4f} |"]
    if acc.get("original") is not None:
        lines.append(f"| top-1 accuracy ({acc['data']}, {acc['samples']} samples) | {_pct(acc['original'])} | "
                     f"{_pct(acc['compressed'])} | |")
    if report.get("distillation"):
        lines += _distillation(report["distillation"], acc)
    if report.get("latency"):
        lines += ["", "## Latency", "", f"Median milliseconds per batch, {report['latency']['threads']} threads.", "",
                  "| runtime | batch | original | compressed | speed-up |", "|---|---:|---:|---:|---:|"]
        for runtime in ("pytorch_cpu", "onnxruntime_cpu", "pytorch_cuda"):
            for batch, e in report["latency"].get(runtime, {}).items():
                if isinstance(e, dict):
                    lines.append(f"| {runtime} | {batch} | {e['original_ms']:.2f} | {e['compressed_ms']:.2f} | "
                                 f"{e['speedup']:.2f}x |")
    onnx = report["onnx"]
    lines += ["", "## ONNX", ""]
    if onnx is None:
        lines += ["Not exported (--no-onnx).", ""]
    else:
        lines += [f"opset {onnx['opset']}, dynamic batch; onnx.checker {onnx['checker']}; onnxruntime vs PyTorch "
                  f"max |error| {onnx['max_abs_error']:.3g} (rtol {onnx['rtol']}, atol {onnx['atol']}); layers as "
                  f"factor chains: {onnx['factor_layers']}, as rebuilt dense kernels: {onnx['dense_layers']}.", ""]
    if report["warnings"]:
        lines += ["## Warnings", "", *(f"- {w}" for w in report["warnings"]), ""]
    lines += ["## Layers", "", "| layer | status | format | ranks | params | rate | rel. error | ONNX form | note |",
              "|---|---|---|---|---:|---:|---:|---|---|"]
    for r in report["layers"]:
        rate = r["params_compressed"] / r["params_original"] if r["status"] == "compressed" else None
        err = "-" if r["rel_error"] is None else f"{r['rel_error']:.4f}"
        lines.append(f"| {r['name']} | {r['status']} | {r['format'] or '-'} | {_ranks(r['ranks'])} | "
                     f"{_num(r['params_original'])} -> {_num(r['params_compressed'])} | "
                     f"{'-' if rate is None else f'{rate:.4f}'} | {err} | {r['deploy_form'] or '-'} | {r['reason']} |")
    lines += ["", "Repeat this run with `tnncompress run --recipe recipe.yaml` (in this directory).", ""]
    return "\n".join(lines)
