"""What a user deploys (issue 26): model.onnx with the factors stored (`--onnx-weights factors`, the default)
against the same forms with the products stored (`--onnx-weights dense`) and the original.

Per model, format and target: the compressed model's forms are decided in onnxruntime (`--deploy-form
auto`), then exported both ways; reported: the bytes of each graph, of model.safetensors and of the
original's graph, whether onnxruntime folded every factor at session start, and the latency of the three
sessions (same options, spinning off), round-robin, at batch 1 and 32. ResNet-32 is the bundled teacher
compressed by Layer-Decomp; ResNet-50 is torchvision's with seeded random weights and random factors
scaled to each kernel's norm (sizes and speed do not depend on the values; see bench_deploy.py).

    python benchmarks/bench_onnx_size.py --out benchmarks/results/onnx_size_cpu.json [--models resnet32 resnet50]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_deploy import random_resnet50_student, resnet32, resnet50  # noqa: E402
from benchmarks.common import load_rows, save_row  # noqa: E402
from tnncompress.compress import compress_model, plan_layer, select_layers  # noqa: E402
from tnncompress.export import INPUT, OUTPUT, deployable, session, to_onnx, write_compressed  # noqa: E402
from tnncompress.export.onnx_graph import folds  # noqa: E402
from tnncompress.export.rebuild import factor_initializers, with_factor_weights  # noqa: E402
from tnncompress.formats import list_formats  # noqa: E402
from tnncompress.timing import interleaved_medians  # noqa: E402

BATCHES = (1, 32)
CELLS = {"resnet32": [(fmt, "params", 0.1) for fmt in list_formats()],
         "resnet50": [(fmt, by, rate) for fmt in ("cp", "tk", "mcp")
                      for by, rate in (("params", 0.05), ("flops", 0.25))]}


def cell(model, size, name: str, fmt: str, rate_by: str, rate: float, min_time: float) -> dict:
    choices = [c for c in select_layers(model, size) if c.status == "compress"]
    plans = [plan_layer(model.get_submodule(c.info.name), c.info, fmt, rate, rate_by) for c in choices]
    plans = [p for p in plans if p.ranks is not None]
    student = compress_model(model, plans)[0] if name == "resnet32" else random_resnet50_student(model, plans)
    deployed, decision = deployable(student, size, BATCHES, "auto", runtime="onnxruntime")
    small_model = with_factor_weights(copy.deepcopy(deployed), student)
    graphs = {"original": to_onnx(model, size), "dense": to_onnx(deployed, size),
              "factors": to_onnx(small_model, size, fold=False)}
    with tempfile.TemporaryDirectory() as tmp:
        write_compressed(Path(tmp), student, "x", {}, size)
        safetensors = (Path(tmp) / "model.safetensors").stat().st_size
    sessions = {k: session(g) for k, g in graphs.items()}
    row = {"model": name, "format": fmt, "rate_by": rate_by, "rate": rate, "layers": len(plans),
           "picked": decision.picked, "factor_layers": sum(c.form == "factors" for c in decision.layers),
           "bytes": {k: len(g) for k, g in graphs.items()}, "safetensors": safetensors,
           "folded": folds(graphs["factors"], factor_initializers(small_model)), "ms": {}}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *size, generator=g)
    outs = {k: s.run([OUTPUT], {INPUT: x.numpy()})[0] for k, s in sessions.items() if k != "original"}
    row["max_abs_difference"] = float(np.abs(outs["factors"] - outs["dense"]).max())
    for batch in BATCHES:
        feed = {INPUT: torch.randn(batch, *size, generator=g).numpy()}
        runs = {k: (lambda s=s, feed=feed: s.run([OUTPUT], feed)) for k, s in sessions.items()}
        row["ms"][str(batch)] = {k: 1e3 * v for k, v in
                                 interleaved_medians(runs, min_time=min_time, max_rounds=30, min_rounds=5).items()}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | format | target | forms (chains / layers) | original ONNX | dense-weights file | model.onnx "
             "(factors) | model.safetensors | model.onnx / safetensors | folded | batch | factors / dense time | "
             "speed-up vs original (factors, dense) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        target = f"{r['rate']:.0%} {'params' if r['rate_by'] == 'params' else 'FLOPs'}"
        b = r["bytes"]
        for batch, ms in r["ms"].items():
            lines.append(f"| {r['model']} | `{r['format']}` | {target} | {r['picked']} ({r['factor_layers']}/"
                         f"{r['layers']}) | {b['original']:,} | {b['dense']:,} | {b['factors']:,} | "
                         f"{r['safetensors']:,} | **{b['factors'] / r['safetensors']:.3f}** | "
                         f"{'yes' if r['folded'] else 'NO'} | {batch} | {ms['factors'] / ms['dense']:.3f} | "
                         f"{ms['original'] / ms['factors']:.2f}x, {ms['original'] / ms['dense']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(CELLS))
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    doc = load_rows(args.out)
    if not args.table:
        for name in args.models:
            model, size = {"resnet32": resnet32, "resnet50": resnet50}[name]()
            for fmt, rate_by, rate in CELLS[name]:
                key = (name, fmt, rate_by, rate)
                if any((r["model"], r["format"], r["rate_by"], r["rate"]) == key for r in doc["rows"]):
                    continue  # resumable: a finished cell is kept
                row = cell(model, size, name, fmt, rate_by, rate, 1.0 if name == "resnet32" else 0.5)
                save_row(args.out, doc, row)
                print(json.dumps({k: v for k, v in row.items() if k != "ms"}), file=sys.stderr)
    print(table(doc["rows"]))


if __name__ == "__main__":
    main()
