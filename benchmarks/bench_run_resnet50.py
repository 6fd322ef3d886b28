"""Benchmark: `tnncompress run` on torchvision ResNet-50 (random init, seed 0) at rate 0.05, per format.

Each format is one full run (Layer-Decomp, safetensors, ONNX export checked against onnxruntime, latency
at batch 1 and 32 unless --no-latency) into a temporary directory; the JSON keeps, per format, the
rates, the ONNX check, the seconds per stage and the latency table.

    python benchmarks/bench_run_resnet50.py --formats mcp mtt --out benchmarks/results/run_resnet50_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, today  # noqa: E402
from tnncompress.formats import list_formats  # noqa: E402
from tnncompress.pipeline import Recipe, run
from tnncompress.schema import to_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", nargs="+", default=list_formats())
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        checkpoint = Path(tmp) / "resnet50.pt"
        torch.save(torchvision.models.resnet50().state_dict(), checkpoint)
        for fmt in args.formats:
            if any(r["format"] == fmt for r in rows):
                continue
            recipe = Recipe.of(checkpoint=str(checkpoint), arch="torchvision:resnet50", input_size="3,224,224",
                               format=fmt, rate=args.rate, latency=not args.no_latency, out=f"{tmp}/{fmt}").check()
            data = to_data(run(recipe).report)
            rows.append({k: data[k] for k in ("format", "target_rate", "params", "flops", "onnx", "latency",
                                              "seconds", "layers_compressed", "warnings")})
            print(json.dumps({"format": fmt, "rate": data["params"]["compressible_rate"], "seconds": data["seconds"],
                              "onnx_max_abs_error": data["onnx"]["check"]["max_abs_error"]}), flush=True)
            args.out.write_text(json.dumps({"machine": machine(), "date": today(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
