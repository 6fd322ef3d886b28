"""The RESULTS.md table: accuracy after Layer-Decomp alone, per format and rate, on a teacher checkpoint.

    python scripts/layer_decomp_table.py \
        --checkpoint tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors --data fashion-mnist \
        --rates 0.05 0.1 0.2 --out benchmarks/results/layer_decomp_resnet32.json

Each cell is one `tnncompress run` (the library call behind the CLI) with --no-latency; the JSON keeps,
per run, the accuracy, the parameter rate and the per-layer reconstruction errors; the script prints
the markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tnncompress.formats import list_formats
from tnncompress.pipeline import Recipe, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--formats", nargs="+", default=list_formats())
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []  # resume: keep finished cells
    done = {(r["format"], r["rate"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats:
            for rate in args.rates:
                if (fmt, rate) in done:
                    continue
                recipe = Recipe.of(checkpoint=args.checkpoint, format=fmt, rate=rate, data=args.data, latency=False,
                                   deploy_form="flops", out=f"{tmp}/{fmt}-{rate}").check()
                report = run(recipe).report
                errors = [r.rel_error for r in report.layers if r.rel_error is not None]
                acc = report.accuracy
                rows.append({"format": fmt, "rate": rate, "top1_original": acc.original.top1,
                             "top1": acc.compressed.top1, "nll": acc.compressed.nll,
                             "compressible_rate": report.params.compressible_rate,
                             "model_rate": report.params.rate, "layers": report.layers_compressed,
                             "rel_error_median": statistics.median(errors), "rel_error_max": max(errors),
                             "rel_error_mean": statistics.fmean(errors), "versions": report.versions})
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(rows, indent=2) + "\n")
                print(f"{fmt} {rate}: top-1 {acc.compressed.top1:.4f}", flush=True)
    print("| format | " + " | ".join(f"rate {r}: top-1 / median err / max err" for r in args.rates) + " |")
    print("|---|" + "---|" * len(args.rates))
    for fmt in args.formats:
        cells = []
        for rate in args.rates:
            r = next(x for x in rows if x["format"] == fmt and x["rate"] == rate)
            cells.append(f"{100 * r['top1']:.2f}% / {r['rel_error_median']:.3f} / {r['rel_error_max']:.3f}")
        print(f"| `{fmt}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
