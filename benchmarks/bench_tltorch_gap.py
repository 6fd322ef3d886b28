"""Benchmark: conv_einsum against tensorly-torch, and why either is faster.

For each layer of `bench_conv_einsum.py`'s grid in the formats tensorly-torch has (cp, tucker, tt), this
times, round-robin in one process (so drift hits all alike):
  tltorch      tensorly-torch 0.5 FactorizedConv(implementation="factorized"), its own ranks
  ours@theirs  conv_einsum ("measure") on *the same factors* as tltorch (same structure, same ranks),
               after checking both compute the same output
  ours         conv_einsum on our format's factors (bench_conv_einsum's ranks, same parameter fraction)

If ours@theirs matches tltorch, the engine is not the cause: the difference is the format (their rank
rule picks a different point of the format with the same parameters). tensorly-torch leaves a new
FactorizedConv's factors uninitialised (zeros, denormals, 1e33: denormal arithmetic is slow on CPUs), so
every factor is drawn here from N(0, 1/fan) first; bench_conv_einsum's first run timed it uninitialised.
Needs `pip install tensorly-torch`.

    python benchmarks/bench_tltorch_gap.py --out benchmarks/results/tltorch_gap_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_conv_einsum import init_tltorch, layer  # noqa: E402
from benchmarks.common import machine, today  # noqa: E402
from tnncompress import contract_expression  # noqa: E402
from tnncompress.timing import interleaved_medians  # noqa: E402

# (format, channels, size, batch, rate, backward): bench_conv_einsum's grid for the formats tltorch has.
ROWS = [(fmt, c, size, batch, rate, backward) for c, size in ((256, 56), (512, 7)) for batch in (1, 32)
        for fmt in ("cp", "tk", "tt") for rate in (0.02, 0.1, 0.4) for backward in (False, True)]


def their_expression(tl_layer):
    """tensorly-torch's factors of a FactorizedConv as (conv_einsum string, factor tensors), in the order
    its `implementation="factorized"` applies them."""
    w = tl_layer.weight
    name = type(w).__name__
    if name == "CPTensor":  # factors: (out, r), (in, r), (kh, r), (kw, r); weights (r,)
        f_out, f_in, f_h, f_w = w.factors
        return "bshw,rs,rh,rw,rt->bthw|hw", [f_in.T, f_h.T, f_w.T, (f_out * w.weights).T]
    if name == "TTTensor":  # (1, in, r1), (r1, kh, r2), (r2, kw, r3), (r3, out, 1), applied in that order
        f0, f1, f2, f3 = w.factors
        return "bshw,sp,phq,qwu,ut->bthw|hw", [f0[0], f1, f2, f3[..., 0]]
    if name == "TuckerTensor":  # core (r0, r1, k1, k2); factors (out, r0), (in, r1), (kh, k1), (kw, k2)
        f_out, f_in, f_h, f_w = w.factors
        return "bshw,sp,qpcd,hc,wd,tq->bthw|hw", [f_in, w.core, f_h, f_w, f_out]
    raise ValueError(name)


def structure(factors) -> str:
    return " ".join("x".join(map(str, f.shape)) for f in factors)


def run_row(fmt, c, size, batch, rate, backward):
    import tltorch

    torch.manual_seed(0)
    tl = tltorch.FactorizedConv(c, c, 3, order=2, padding=1, rank=rate, implementation="factorized",
                                factorization={"cp": "cp", "tk": "tucker", "tt": "tt"}[fmt])
    init_tltorch(tl)
    text, theirs = their_expression(tl)
    theirs = [t.detach().clone() for t in theirs]
    x = torch.randn(batch, c, size, size)
    with torch.no_grad():
        ref = tl(x)
        same = contract_expression(text, x.shape, *[t.shape for t in theirs], padding=1, optimize="measure")
        err = ((same(x, *theirs) - ref).norm() / ref.norm()).item()
    our_text, our_shapes, _, rank, params = layer(fmt, c, rate)
    ours = [torch.randn(s) / s[0] ** 0.5 for s in our_shapes]
    ours_expr = contract_expression(our_text, x.shape, *our_shapes, padding=1, optimize="measure",
                                    backward=backward)
    same_expr = contract_expression(text, x.shape, *[t.shape for t in theirs], padding=1, optimize="measure",
                                    backward=backward)
    xs = x.clone().requires_grad_(backward)
    for t in ours + theirs:
        t.requires_grad_(backward)
    tl.requires_grad_(backward)

    def run(fn):
        if not backward:
            def forward():
                with torch.no_grad():
                    fn()
            return forward

        def step():
            out = fn()
            out.backward(torch.ones_like(out))
        return step

    times = interleaved_medians({"tltorch": run(lambda: tl(xs)),
                                 "ours@theirs": run(lambda: same_expr(xs, *theirs)),
                                 "ours": run(lambda: ours_expr(xs, *ours))}, min_time=1.0, max_rounds=40)
    return {"format": fmt, "channels": c, "size": size, "batch": batch, "rate": rate, "backward": backward,
            "their_structure": structure(theirs), "our_structure": structure(ours),
            "their_params": sum(t.numel() for t in theirs), "our_params": params,
            "their_flops": optimal_flops(text, x.shape, [t.shape for t in theirs]),
            "our_flops": optimal_flops(our_text, x.shape, our_shapes),
            "same_output_rel_err": err,
            "their_plan": " ; ".join(s.label for s in same_expr.plan),
            **{f"{k}_ms": v * 1e3 for k, v in times.items()}}


THEIR_TEXT = {"cp": "bshw,rs,rh,rw,rt->bthw|hw", "tt": "bshw,sp,phq,qwu,ut->bthw|hw",
              "tk": "bshw,sp,qpcd,hc,wd,tq->bthw|hw"}


def optimal_flops(text, x_shape, shapes) -> int:
    """Forward FLOPs of the FLOP-optimal plan: the structure's cost, whichever plan `measure` ran."""
    return contract_expression(text, tuple(x_shape), *shapes, padding=1, optimize="optimal").flops


def _flops_ratio(r) -> float:
    x = (r["batch"], r["channels"], r["size"], r["size"])

    def shapes(structure):
        return [tuple(map(int, f.split("x"))) for f in structure.split()]
    return (optimal_flops(THEIR_TEXT[r["format"]], x, shapes(r["their_structure"]))
            / optimal_flops(layer(r["format"], r["channels"], r["rate"])[0], x, shapes(r["our_structure"])))


def markdown(rows) -> str:
    out = ["| format | layer | batch | rate | pass | tltorch structure | our structure | FLOPs theirs/ours | "
           "tltorch | ours@theirs | ours | ours@theirs / tltorch | ours / tltorch |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['format']} | {r['channels']}->{r['channels']} @{r['size']} | {r['batch']} | "
                   f"{r['rate']:.0%} | {'fwd+bwd' if r['backward'] else 'fwd'} | {r['their_structure']} | "
                   f"{r['our_structure']} | {_flops_ratio(r):.2f} | {r['tltorch_ms']:.2f} | "
                   f"{r['ours@theirs_ms']:.2f} | {r['ours_ms']:.2f} | "
                   f"{r['ours@theirs_ms'] / r['tltorch_ms']:.2f} | {r['ours_ms'] / r['tltorch_ms']:.2f} |")
    return "\n".join(out)


def _row(text: str) -> tuple:
    fmt, c, size, batch, rate, p = text.split(",")
    return fmt, int(c), int(size), int(batch), float(rate), p == "fwdbwd"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", action="store_true", help="print the table of --out and exit")
    ap.add_argument("--row", dest="rows", action="append", type=_row,
                    help="only this row: format,channels,size,batch,rate,fwd|fwdbwd (repeatable)")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(args.out.read_text())["rows"]))
        return 0
    try:
        import tltorch  # noqa: F401
    except ImportError:
        print("tensorly-torch is not installed (pip install tensorly-torch); nothing to compare", file=sys.stderr)
        return 1
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for spec in ROWS:
        if args.rows and spec not in args.rows:
            continue
        row = run_row(*spec)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "date": today(), "rows": rows}, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
