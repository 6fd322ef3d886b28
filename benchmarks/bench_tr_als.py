"""TR-ALS's sweep: the right-hand sides B_k = X_(k) Q of every core from two half contractions of the tensor
(decompose/tr.py, _HalfContractions) against one contraction of the whole tensor per core (the definition,
_normal_equations), on the tensors Layer-Decomp factorises for a torchvision ResNet-18 (random weights,
seed 0) in `mtr` or `tr` at rate 0.02 (the suite's test), one thread, in one process, alternating.

    python benchmarks/bench_tr_als.py --out benchmarks/results/tr_als_resnet18_cpu.json [--format mtr]

Both take the same least-squares steps (the same iterates to ~1e-13: tests/decompose), so the error and
the sweeps are the same; the seconds are what differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import load_rows, save_row, today  # noqa: E402
from tnncompress.compress import compress_model, plan_model, select_layers  # noqa: E402
from tnncompress.compress.config import CompressConfig  # noqa: E402
from tnncompress.decompose import tr  # noqa: E402


def _per_core(tensor: torch.Tensor):
    """A stand-in for _HalfContractions that makes the sweep contract the whole tensor for every core."""
    return None


def one(fmt: str, rate: float, how: str) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    plans = [p for p in plan_model(model, select_layers(model, (3, 32, 32)), CompressConfig(format=fmt, rate=rate))
             if p.ranks]
    halves = tr._HalfContractions
    if how == "per core":
        tr._HalfContractions = _per_core
    try:
        start = time.perf_counter()
        _, results = compress_model(model, plans)
        seconds = time.perf_counter() - start
    finally:
        tr._HalfContractions = halves
    return {"format": fmt, "rate": rate, "contractions": how, "layers": len(plans), "seconds": round(seconds, 2),
            "mean_rel_error": sum(r.rel_error for r in results) / len(results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--format", default="mtr", choices=["mtr", "tr"])
    ap.add_argument("--rate", type=float, default=0.02)
    ap.add_argument("--repeats", type=int, default=2)
    opts = ap.parse_args()
    torch.set_num_threads(1)
    doc = load_rows(opts.out)
    for _ in range(opts.repeats):
        for how in ("per core", "two halves"):
            row = {"date": today(), **one(opts.format, opts.rate, how)}
            print(row, flush=True)
            save_row(opts.out, doc, row)


if __name__ == "__main__":
    main()
