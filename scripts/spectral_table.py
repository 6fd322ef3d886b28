"""The RESULTS.md spectral-control table: the ResNet-32 teacher compressed with and without a spectral
constraint, then its accuracy, calibration, spectrum and robustness.

    python scripts/spectral_table.py --formats tk mcp --variants none clip:1 clip:2 orth:10 \
        --steps 500 --out benchmarks/results/spectral_resnet32.json

Each cell is three commands (the same as typing them):
    tnncompress run CHECKPOINT -f F -r 0.1 -d fashion-mnist --kd auto --kd-steps N [--spectral clip:C |
        --orthogonality W] --no-latency --no-onnx --load-form dense --out DIR --force
    tnncompress spectrum DIR --json --power-iters 20
    tnncompress eval DIR -d fashion-mnist --json --noise 0.1,0.2 --fgsm 0.01,0.03
A budget of steps, not seconds, so that every cell trains as much whatever else the machine runs.
The JSON keeps each command's output; finished cells are skipped when the script is rerun. It prints the
Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TEACHER = "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"
CLI = [sys.executable, "-m", "tnncompress.cli.app"]


def variant_args(variant: str) -> list[str]:
    if variant == "none":
        return []
    if variant.startswith("orth:"):
        return ["--orthogonality", variant.split(":", 1)[1]]
    return ["--spectral", variant]


def cell(fmt: str, variant: str, args, work: Path) -> dict:
    out = work / f"{fmt}-{variant.replace(':', '')}"
    run = [*CLI, "run", args.checkpoint, "-f", fmt, "-r", str(args.rate), "-d", args.data, "--kd", "auto",
           "--kd-steps", str(args.steps), *variant_args(variant), "--no-latency", "--no-onnx", "--load-form", "dense",
           "--out", str(out), "--force", "-q", "--json"]
    report = json.loads(subprocess.run(run, check=True, capture_output=True, text=True).stdout)
    spectrum = json.loads(subprocess.run([*CLI, "spectrum", str(out), "--json", "--power-iters", "20"], check=True,
                                         capture_output=True, text=True).stdout)
    evaluation = json.loads(subprocess.run([*CLI, "eval", str(out), "-d", args.data, "--json", "-q", "--noise",
                                            args.noise, "--fgsm", args.fgsm, "--limit", str(args.robust_limit)],
                                           check=True, capture_output=True, text=True).stdout)
    return {"format": fmt, "variant": variant, "command": " ".join(run[2:]), "report": report,
            "spectrum": spectrum, "eval": evaluation}


def tables(cells: list[dict]) -> str:
    lines = ["| format | constraint | top-1 | ECE | NLL | max sigma_max (compressed) | network bound | measured "
             "lower | " + " | ".join(f"{r['attack']} {r['strength']:g}" for r in cells[0]["eval"]["robustness"])
             + " |", "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cells[0]["eval"]["robustness"])]
    for c in cells:
        acc = c["report"]["accuracy"]["compressed"]
        compressed = {r["name"] for r in c["report"]["layers"] if r["status"] == "compressed"}
        sig = max(layer["sigma_max"] for layer in c["spectrum"]["layers"] if layer["name"] in compressed)
        net = c["spectrum"]["network"]
        robust = " | ".join(f"{100 * r['top1']:.2f}%" for r in c["eval"]["robustness"])
        lines.append(f"| {c['format']} | {c['variant']} | {100 * acc['top1']:.2f}% | {acc['ece']:.4f} | "
                     f"{acc['nll']:.4f} | {sig:.3f} | {net['upper']:.3g} | {net['lower']:.3g} | {robust} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=TEACHER)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--formats", nargs="+", default=["tk", "mcp"])
    ap.add_argument("--variants", nargs="+", default=["none", "clip:1", "clip:2", "orth:10"])
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--noise", default="0.1,0.2")
    ap.add_argument("--fgsm", default="0.01,0.03")
    ap.add_argument("--robust-limit", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    done = json.loads(args.out.read_text()) if args.out.is_file() else []
    with tempfile.TemporaryDirectory() as work:
        for fmt in args.formats:
            for variant in args.variants:
                if any(c["format"] == fmt and c["variant"] == variant for c in done):
                    continue
                done.append(cell(fmt, variant, args, Path(work)))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(done, indent=1))
                print(f"done {fmt} {variant}", file=sys.stderr, flush=True)
    print(tables(done))


if __name__ == "__main__":
    main()
