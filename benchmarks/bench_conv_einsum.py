"""Benchmark: conv_einsum plans for tensorised 3x3 convolutions against the obvious alternatives.

For the CP, Tucker-2, TT and reshaped-CP (mcp) layer expressions of a 256->256 3x3 convolution at 56x56
and a 512->512 3x3 convolution at 7x7, with ranks giving 2%, 10% and 40% of the dense parameters, at
batch 1 and 32, forward and forward+backward, time:
  ours     conv_einsum's plan (strategy given by --optimize: "measure" by default)
  naive    left-to-right evaluation by the same engine
  rebuild  plain PyTorch: torch.einsum to rebuild the dense kernel, then F.conv2d
  tltorch  tensorly-torch's FactorizedConv (implementation="factorized") where it has the format
           (cp, tucker, tt; its ranks come from the same parameter fraction, by its own rule)
and the cost of a cached conv_einsum call over the PyTorch operations it runs.

    python benchmarks/bench_conv_einsum.py --out benchmarks/results/conv_einsum_cpu.json
Writes JSON and prints a markdown table (paste into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, median_ms, today  # noqa: E402
from tnncompress import contract_expression, conv_einsum  # noqa: E402


def balanced3(n: int) -> tuple[int, int, int]:
    """n = a*b*c with factors as equal as possible (a >= b >= c)."""
    best = None
    for a in range(1, n + 1):
        if n % a:
            continue
        for b in range(1, n // a + 1):
            if (n // a) % b:
                continue
            c = n // a // b
            key = max(a, b, c) - min(a, b, c)
            if best is None or key < best[0]:
                best = (key, tuple(sorted((a, b, c), reverse=True)))
    return best[1]


def largest_rank(params_of, budget: int) -> int:
    r = 1
    while params_of(r + 1) <= budget:
        r += 1
    return r


def layer(fmt: str, c: int, rate: float):
    """(expression, factor shapes, dense-rebuild einsum, rank, params) for a c->c 3x3 layer."""
    budget = int(rate * c * c * 9)
    if fmt == "cp":
        r = largest_rank(lambda r: r * (2 * c + 6), budget)
        return ("bshw,rs,rh,rw,rt->bthw|hw", [(r, c), (r, 3), (r, 3), (r, c)], "rs,rh,rw,rt->tshw", r,
                r * (2 * c + 6))
    if fmt == "tk":
        r = largest_rank(lambda r: 2 * c * r + 9 * r * r, budget)
        return ("bshw,sp,pqhw,qt->bthw|hw", [(c, r), (r, r, 3, 3), (r, c)], "sp,pqhw,qt->tshw", r,
                2 * c * r + 9 * r * r)
    if fmt == "tt":
        r = largest_rank(lambda r: 2 * c * r + 6 * r * r, budget)
        return ("bshw,sp,phq,qwu,ut->bthw|hw", [(c, r), (r, 3, r), (r, 3, r), (r, c)], "sp,phq,qwu,ut->tshw", r,
                2 * c * r + 6 * r * r)
    if fmt == "mcp":
        t = balanced3(c)
        r = largest_rank(lambda r: r * (sum(x * x for x in t) + 9), budget)
        return ("b(s1)(s2)(s3)hw,r(t1)(s1),r(t2)(s2),r(t3)(s3),rhw->b(t1)(t2)(t3)hw|hw",
                [(r, t[0], t[0]), (r, t[1], t[1]), (r, t[2], t[2]), (r, 3, 3)], "rad,rbe,rcf,rhw->abcdefhw", r,
                r * (sum(x * x for x in t) + 9))
    raise ValueError(fmt)


def tltorch_layer(fmt: str, c: int, rate: float):
    try:
        import tltorch
    except ImportError:
        return None
    name = {"cp": "cp", "tk": "tucker", "tt": "tt"}.get(fmt)
    if name is None:
        return None
    return init_tltorch(tltorch.FactorizedConv(c, c, 3, order=2, padding=1, rank=rate, factorization=name,
                                               implementation="factorized"))


def init_tltorch(tl):
    """Draw a tensorly-torch layer's factors from N(0, 1/fan): a new FactorizedConv's factors are left
    uninitialised (zeros, denormals, 1e33), and denormal arithmetic is slow on CPUs, so timing it as made
    measures the memory it happened to get (the first run of this benchmark did)."""
    import torch

    with torch.no_grad():
        for f in tl.weight.factors:
            f.normal_(0, 1.0 / f.shape[0] ** 0.5)
        if hasattr(tl.weight, "core"):
            tl.weight.core.normal_(0, 1.0 / tl.weight.core.shape[0] ** 0.5)
        if hasattr(tl.weight, "weights"):
            tl.weight.weights.fill_(1.0)
    return tl


NAIVE_LIMIT = 1 << 28  # elements (1 GiB in float32): larger naive intermediates are not run


def run_row(fmt, c, size, batch, rate, backward, optimize):
    text, shapes, dense, rank, params = layer(fmt, c, rate)
    g = torch.Generator().manual_seed(0)
    factors = [torch.randn(s, generator=g) / math.sqrt(s[0]) for s in shapes]
    x = torch.randn(batch, c, size, size, generator=g)
    xin = x.reshape(batch, *balanced3(c), size, size) if fmt == "mcp" else x
    for t in factors + [x]:
        t.requires_grad_(backward)
    ours = contract_expression(text, xin.shape, *shapes, padding=1, optimize=optimize, backward=backward)
    naive = contract_expression(text, xin.shape, *shapes, padding=1, optimize="naive")

    def timed(fn):
        if backward:
            def step():
                out = fn()
                out.backward(torch.ones_like(out))
            return median_ms(step)
        with torch.no_grad():
            return median_ms(fn)

    too_big = naive.largest_intermediate > NAIVE_LIMIT
    row = {"format": fmt, "channels": c, "size": size, "batch": batch, "rate": rate, "rank": rank,
           "params": params, "dense_params": c * c * 9, "backward": backward,
           "plan": " ; ".join(s.label for s in ours.plan),
           "order": "rebuild" if all(0 not in step for step in ours.path[:-1]) else "factorised",
           "flops_ours": ours.flops,
           "flops_naive": ours.naive_flops, "flops_rebuild": ours.rebuild_flops,
           "ours_ms": timed(lambda: ours(xin, *factors)),
           "naive_ms": None if too_big else timed(lambda: naive(xin, *factors)),
           "naive_largest": naive.largest_intermediate,
           "rebuild_ms": timed(lambda: F.conv2d(x, torch.einsum(dense, *factors).reshape(c, c, 3, 3), padding=1))}
    tl = tltorch_layer(fmt, c, rate)
    if tl is not None:
        tl.requires_grad_(backward)
        row["tltorch_ms"] = timed(lambda: tl(x))
        row["tltorch_params"] = sum(p.numel() for p in tl.parameters())
    best_baseline = min(t for t in (row["naive_ms"], row["rebuild_ms"]) if t is not None)
    row["ours_vs_best"] = row["ours_ms"] / best_baseline
    return row


def overhead(c=64, size=7):
    """A cached conv_einsum call against the PyTorch operations of its plan, on a small layer where
    any overhead would show."""
    text, shapes, _, _, _ = layer("cp", c, 0.1)
    factors = [torch.randn(s) for s in shapes]
    x = torch.randn(1, c, size, size)
    expr = contract_expression(text, x.shape, *shapes, padding=1)
    with torch.no_grad():
        cached = median_ms(lambda: conv_einsum(text, x, *factors, padding=1), min_time=1.0, max_reps=2000)
        pure = median_ms(lambda: expr._run(x, *factors), min_time=1.0, max_reps=2000)
    return {"layer": f"cp {c}->{c} 3x3 at {size}x{size}, batch 1", "cached_call_ms": cached, "pure_ops_ms": pure}


def markdown(rows, over, args) -> str:
    lines = [f"Machine: {machine()}. Date: {today()}. Command: `python benchmarks/bench_conv_einsum.py "
             f"{' '.join(sys.argv[1:])}`. Times in ms (median); 'ours/best' is our plan's time over the faster "
             "of naive and rebuild.", "",
             "| format | layer | batch | rate | rank | pass | ours | naive | rebuild | tltorch | ours/best | plan |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tl = f"{r['tltorch_ms']:.2f}" if "tltorch_ms" in r else "-"
        naive = f"{r['naive_ms']:.2f}" if r["naive_ms"] is not None else \
            f"not run ({4 * r['naive_largest'] / 2**30:.0f} GiB)"
        lines.append(f"| {r['format']} | {r['channels']}->{r['channels']} @{r['size']} | {r['batch']} | "
                     f"{r['rate']:.0%} | {r['rank']} | {'fwd+bwd' if r['backward'] else 'fwd'} | "
                     f"{r['ours_ms']:.2f} | {naive} | {r['rebuild_ms']:.2f} | {tl} | "
                     f"{r['ours_vs_best']:.2f} | {r['order']} |")
    lines += ["", f"Planning overhead ({over['layer']}): cached `conv_einsum` call "
              f"{over['cached_call_ms'] * 1e3:.1f} µs vs the plan's PyTorch operations alone "
              f"{over['pure_ops_ms'] * 1e3:.1f} µs."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="cp,tk,tt,mcp")
    ap.add_argument("--layers", default="256:56,512:7", help="channels:size pairs")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rates", default="0.02,0.1,0.4")
    ap.add_argument("--passes", default="fwd,fwdbwd")
    ap.add_argument("--optimize", default="measure")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for spec in args.layers.split(","):
        c, size = map(int, spec.split(":"))
        for batch in map(int, args.batches.split(",")):
            for fmt in args.formats.split(","):
                for rate in map(float, args.rates.split(",")):
                    for p in args.passes.split(","):
                        row = run_row(fmt, c, size, batch, rate, p == "fwdbwd", args.optimize)
                        rows.append(row)
                        print(json.dumps({k: v for k, v in row.items() if k != "plan"}), file=sys.stderr, flush=True)
    over = overhead()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "date": today(), "rows": rows, "overhead": over},
                                       indent=1))
    print(markdown(rows, over, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
