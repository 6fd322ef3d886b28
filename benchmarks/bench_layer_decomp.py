"""Benchmark: Layer-Decomp of every ResNet-50 convolution at rate 0.05, ours against TensorLy's own
decomposition functions run the same way.

For each format (mcp, mtt, cp, tk): the ranks tnncompress chooses for torchvision ResNet-50 at rate 0.05
(randomly initialised weights, seed 0: no pretrained weights can be downloaded; random kernels are the
hard case for ALS, which converges faster on trained ones), then every planned layer decomposed
  ours      tnncompress.compress.compress_model (CP-ALS / HOOI / TT-SVD in float64, 100 sweeps at most)
  tensorly  tensorly.decomposition.parafac / partial_tucker / tensor_train (PyTorch backend, float64,
            n_iter_max=100, SVD initialisation) on the same tensors (the same reshaping) with the same ranks
each in a fresh subprocess, reporting wall time, the mean relative reconstruction error, and the peak
resident memory above the process's baseline (the model loaded).

    python benchmarks/bench_layer_decomp.py --out benchmarks/results/layer_decomp_resnet50_cpu.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, today  # noqa: E402
from tnncompress.compress import compress_model, plan_model, select_layers  # noqa: E402
from tnncompress.compress.config import CompressConfig  # noqa: E402

FORMATS = ("mcp", "mtt", "cp", "tk")
RATE = 0.05


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _plans(fmt: str):
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    choices = select_layers(model, (3, 224, 224))
    return model, [p for p in plan_model(model, choices, CompressConfig(format=fmt, rate=RATE)) if p.ranks]


def _tensorly_one(fmt: str, plan, kernel: torch.Tensor) -> float:
    """One layer by TensorLy, on the tensor our Layer-Decomp factorises; returns the relative error."""
    import tensorly as tl
    from tensorly.decomposition import parafac, partial_tucker, tensor_train

    tl.set_backend("pytorch")
    k = kernel.double()
    tz, r = plan.tensorization, plan.ranks
    if fmt == "cp":
        x = k.permute(1, 2, 3, 0).contiguous()
        approx = tl.cp_to_tensor(parafac(x, r["r"], n_iter_max=100, init="svd", tol=1e-8))
    elif fmt == "mcp":
        m, (_, _, kh, kw) = tz.m, k.shape
        x = k.reshape(*tz.out_modes, *tz.in_modes, kh, kw)
        x = x.permute([d for i in range(m) for d in (i, m + i)] + [2 * m, 2 * m + 1])
        x = x.reshape(*(a * b for a, b in zip(tz.out_modes, tz.in_modes, strict=True)), kh * kw).contiguous()
        approx = tl.cp_to_tensor(parafac(x, r["r"], n_iter_max=100, init="svd", tol=1e-8))
    elif fmt == "tk":
        x = k
        (core, factors), _ = partial_tucker(x, rank=[r["r2"], r["r1"]], modes=[0, 1], n_iter_max=100, tol=1e-7)
        approx = tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])
    else:  # mtt
        m, (_, _, kh, kw) = tz.m, k.shape
        x = k.reshape(*tz.out_modes, *tz.in_modes, kh, kw)
        x = x.permute([d for i in range(m) for d in (m + i, i)] + [2 * m, 2 * m + 1])
        x = x.reshape(*(a * b for a, b in zip(tz.in_modes, tz.out_modes, strict=True)), kh * kw).contiguous()
        approx = tl.tt_to_tensor(tensor_train(x, [1, *(r[f"r{i + 1}"] for i in range(m)), 1]))
    return float(torch.linalg.vector_norm(approx - x) / torch.linalg.vector_norm(x))


def one(fmt: str, impl: str) -> dict:
    model, plans = _plans(fmt)
    base = _rss_mb()
    start = time.perf_counter()
    if impl == "ours":
        _, results = compress_model(model, plans)
        errors = [r.rel_error for r in results]
    else:
        errors = []
        for plan in plans:
            weight = model.get_submodule(plan.name).weight.detach()
            errors.append(_tensorly_one(fmt, plan, weight))
    seconds = time.perf_counter() - start
    return {"format": fmt, "impl": impl, "layers": len(plans), "seconds": seconds,
            "mean_rel_error": sum(errors) / len(errors), "peak_rss_above_baseline_mb": _rss_mb() - base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=2, metavar=("FORMAT", "IMPL"), help=argparse.SUPPRESS)
    ap.add_argument("--formats", nargs="+", default=list(FORMATS))
    ap.add_argument("--impls", nargs="+", default=["ours", "tensorly"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per format and implementation")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    rows = json.loads(args.out.read_text())["rows"] if args.out and args.out.is_file() else []
    for fmt in args.formats:
        for impl in args.impls:
            if any(r["format"] == fmt and r["impl"] == impl for r in rows):
                continue  # resume
            try:
                done = subprocess.run([sys.executable, __file__, "--one", fmt, impl], capture_output=True,
                                      text=True, check=True, timeout=args.timeout)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            except subprocess.TimeoutExpired:
                rows.append({"format": fmt, "impl": impl, "timed_out": True, "seconds": args.timeout})
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                args.out.write_text(json.dumps({"machine": machine(), "date": today(), "rate": RATE,
                                                "rows": rows}, indent=2) + "\n")
    print(f"\nMachine: {machine()}. Date: {today()}. Rate {RATE}, torchvision ResNet-50 (random init, seed 0).\n")
    print("| format | layers | ours (s) | TensorLy (s) | TensorLy / ours | mean rel. error ours / TensorLy | "
          "peak memory ours / TensorLy (MB) |")
    print("|---|---:|---:|---:|---:|---|---|")
    for fmt in args.formats:
        o = next((r for r in rows if r["format"] == fmt and r["impl"] == "ours"), None)
        t = next((r for r in rows if r["format"] == fmt and r["impl"] == "tensorly"), None)
        if o and t and t.get("timed_out"):
            print(f"| `{fmt}` | {o['layers']} | {o['seconds']:.1f} | > {t['seconds']:.0f} (stopped) | "
                  f"> {t['seconds'] / o['seconds']:.1f} | {o['mean_rel_error']:.4f} / - | "
                  f"{o['peak_rss_above_baseline_mb']:.0f} / - |")
        elif o and t:
            print(f"| `{fmt}` | {o['layers']} | {o['seconds']:.1f} | {t['seconds']:.1f} | "
                  f"{t['seconds'] / o['seconds']:.2f} | {o['mean_rel_error']:.4f} / {t['mean_rel_error']:.4f} | "
                  f"{o['peak_rss_above_baseline_mb']:.0f} / {t['peak_rss_above_baseline_mb']:.0f} |")


if __name__ == "__main__":
    main()
