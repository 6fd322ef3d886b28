"""The RESULTS.md distillation table: test accuracy after Seq-KD and E2E-KD, per format and rate, under
the same budget of gradient updates.

    python scripts/kd_table.py --checkpoint tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors \
        --data fashion-mnist --formats cp tk tt mcp mtk mtt --rates 0.05 0.1 --kd seq e2e \
        --steps 600 --lr seq=1e-2 e2e=3e-3 --out benchmarks/results/kd_resnet32.json

Each cell is one `tnncompress run` (the library call behind the CLI) with --no-latency --no-onnx; the JSON
keeps, per run, the recipe, the accuracies (original, Layer-Decomp alone, distilled), the accuracy curve
and the seconds; finished cells are skipped when the script is rerun. The script prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tnncompress.pipeline import Recipe, run
from tnncompress.schema import to_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--formats", nargs="+", default=["cp", "tk", "tt", "mcp", "mtk", "mtt"])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1])
    ap.add_argument("--kd", nargs="+", default=["seq", "e2e"])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", nargs="+", default=["1e-3"], help="one learning rate, or ALGORITHM=LR per algorithm")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seq-unit", default="layer")
    ap.add_argument("--curve-samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    lrs = {kd: float(v) for kd, v in (item.split("=") for item in args.lr if "=" in item)}
    lrs = {kd: lrs.get(kd, float(args.lr[0]) if "=" not in args.lr[0] else 1e-3) for kd in args.kd}
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    done = {(r["format"], r["rate"], r["kd"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            for fmt in args.formats:
                for kd in args.kd:
                    if (fmt, rate, kd) in done:
                        continue
                    recipe = Recipe.of(checkpoint=args.checkpoint, format=fmt, rate=rate, data=args.data, kd=kd,
                                       kd_steps=args.steps, kd_lr=lrs[kd], kd_batch_size=args.batch_size,
                                       seq_unit=args.seq_unit, kd_eval_limit=args.curve_samples, device=args.device,
                                       latency=False, onnx=False, out=f"{tmp}/{fmt}-{rate}-{kd}").check()
                    report = run(recipe).report
                    acc, d = report.accuracy, report.distillation
                    rows.append({"format": fmt, "rate": rate, "kd": kd, "steps": d.updates,
                                 "batch_size": args.batch_size, "lr": lrs[kd], "device": d.device,
                                 "original": acc.original.top1, "layer_decomp_curve": acc.layer_decomp_top1,
                                 "distilled": acc.compressed.top1, "samples": acc.samples,
                                 "compressible_rate": report.params.compressible_rate,
                                 "curve": to_data(d.curve), "seconds": report.seconds,
                                 "images_per_s": [u.images_per_s for u in d.phases],
                                 "events": to_data(d.events), "recipe": report.recipe})
                    args.out.write_text(json.dumps(rows, indent=1) + "\n")
                    print(f"{fmt} {rate} {kd}: {100 * acc.compressed.top1:.2f}% "
                          f"(Layer-Decomp {100 * acc.layer_decomp_top1:.2f}%) in {report.seconds['total']:.0f} s",
                          flush=True)
    print_table(rows, args.formats, args.rates)


def print_table(rows: list[dict], formats: list[str], rates: list[float]) -> None:
    by = {(r["format"], r["rate"], r["kd"]): r for r in rows}
    print("| format | " + " | ".join(f"{100 * r:g}% Seq-KD | {100 * r:g}% E2E-KD" for r in rates) + " |")
    print("|---|" + "---:|---:|" * len(rates))
    for fmt in formats:
        cells = []
        for rate in rates:
            for kd in ("seq", "e2e"):
                r = by.get((fmt, rate, kd))
                cells.append("-" if r is None else f"{100 * r['distilled']:.2f}")
        print(f"| {fmt} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
