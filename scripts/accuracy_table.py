"""The RESULTS.md accuracy table: top-1 on the whole test set after each stage of `--kd auto`, per
format and rate, with each stage's CPU seconds.

    python scripts/accuracy_table.py --checkpoint tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors \
        --formats mcp mtt cp tt tk --rates 0.1 0.05 0.02 --budget 15m --out benchmarks/results/accuracy_resnet32.json
    python scripts/accuracy_table.py ... --allocate global --formats mcp tk --rates 0.05 0.02 --out ...global.json

`--show FILE...` prints the table of finished cells from one or more JSON files (runs can be split
between processes: two single-threaded workers, `OMP_NUM_THREADS=1`, use both cores of a 2-core machine
better than one two-threaded worker on these small layers).

Each cell is one `tnncompress run CHECKPOINT -f F -r R -d fashion-mnist --kd auto --kd-budget B
--kd-eval-limit 10000 --no-latency --no-onnx [--allocate global]` (the library call behind it), so that
every stage's accuracy is measured on all 10,000 test images: (a) weight-space Layer-Decomp, (b)
data-aware Layer-Decomp, (c) + batch-norm recalibration, (d) + cached Seq-KD, (e) + E2E-KD. The JSON
keeps each run's report (finished cells are skipped when the script is rerun); the script prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tnncompress.pipeline import Recipe, run
from tnncompress.schema import to_data


def cell(report: dict) -> dict:
    """The table's numbers from one run's report: (stage, top-1, CPU seconds) in order."""
    stages = [(s["stage"], s["top1"], s["cpu_seconds"]) for s in report["stages"]]
    d = report["distillation"]
    seq = [p for p in d["phases"] if p["kind"] == "seq"]
    e2e = [p for p in d["phases"] if p["kind"] != "seq"]
    after_seq = next((c["top1"] for c in d["curve"] if seq and c["after"] == seq[-1]["phase"]), None)
    stages.append(("seq_kd", after_seq, sum(p["cpu_seconds"] for p in seq)))
    stages.append(("e2e_kd", report["accuracy"]["compressed"]["top1"], sum(p["cpu_seconds"] for p in e2e)))
    return {"stages": stages, "compressible_rate": report["params"]["compressible_rate"],
            "wall_seconds": report["seconds"]["total"],
            "cpu_seconds": report["cpu_seconds"]["total"], "original": report["accuracy"]["original"]["top1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--formats", nargs="+", default=["mcp", "mtt", "cp", "tt", "tk"])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--allocate", default="uniform")
    ap.add_argument("--set", nargs="*", default=[], help="more options as key=value (flat recipe keys)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--show", type=Path, nargs="+", help="print the table of these JSON files and stop")
    args = ap.parse_args()
    if args.show:
        print_table([r for path in args.show for r in json.loads(path.read_text())])
        return
    if args.out is None or args.checkpoint is None:
        ap.error("--checkpoint and --out are required (or --show)")
    extra = {k: json.loads(v) if v[:1] in "0123456789[{-" or v in ("true", "false") else v
             for k, v in (item.split("=", 1) for item in args.set)}
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    done = {(r["format"], r["rate"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            for fmt in args.formats:
                if (fmt, rate) in done:
                    continue
                recipe = Recipe.of(checkpoint=args.checkpoint, format=fmt, rate=rate, data=args.data, kd="auto",
                                   kd_budget=args.budget, kd_eval_limit=10_000, latency=False, onnx=False,
                                   allocate=args.allocate, out=f"{tmp}/{fmt}-{rate}", **extra).check()
                report = to_data(run(recipe).report)
                rows.append({"format": fmt, "rate": rate, "allocate": args.allocate, "budget": args.budget,
                             **cell(report), "report": report})
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(rows, indent=1) + "\n")
                print(f"{fmt} {rate}: " + ", ".join(f"{s} {100 * (t or 0):.2f}%" for s, t, _ in rows[-1]["stages"]),
                      flush=True)
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    """Top-1 after each stage with the stage's CPU seconds, and the whole run's wall-clock minutes."""
    print("| format | rate | ranks | compressed-layer rate | (a) weight-space | (b) data-aware | (c) + BN recal. "
          "| (d) + cached Seq-KD | (e) + E2E-KD | CPU s | wall min |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["allocate"] != "uniform", -r["rate"], r["format"])):
        cells = [f"{100 * t:.2f}% ({c:.{0 if c >= 10 else 1}f} s)" if t is not None else "-"
                 for _, t, c in r["stages"]]
        if r["report"]["distillation"]["events"]:  # the divergence guard fired: (g)
            cells[-1] += " (g)"
        print(f"| `{r['format']}` | {r['rate']} | {r['allocate']} | {r['compressible_rate']:.3f} | "
              + " | ".join(cells) + f" | {r['cpu_seconds']:.0f} | {r['wall_seconds'] / 60:.1f} |")


if __name__ == "__main__":
    main()
