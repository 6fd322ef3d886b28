"""RESULTS.md's INT8 table from run output directories: `python scripts/int8_table.py OUT... [--bqn DIR]`.

Per run (one made with `--quantize int8`): the float compressed model's top-1 (PyTorch) and model.int8.onnx's
(onnxruntime), on the same test samples; the sizes of the original's graph, model.onnx (factors), model.int8.onnx
and model.safetensors; and the latency of the original graph, model.onnx and model.int8.onnx in onnxruntime
(the run's own measurement, round-robin). With `--bqn DIR` (a `--bqn-bits` run): its model.onnx (integer
levels) evaluated in onnxruntime on the whole test set, against the MAP QNN's top-1 in PyTorch."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tnncompress.report import read_report  # noqa: E402


def rows(directory: Path) -> list[str]:
    r = read_report(directory / "report.json")
    acc, q, s = r.accuracy, r.int8, r.sizes
    onnx = s.original["onnx"]
    lines = []
    for batch in r.latency.runtimes.get("onnxruntime_cpu", {}):
        float_ms = r.latency.runtimes["onnxruntime_cpu"][batch]
        int8_ms = r.latency.runtimes["onnxruntime_int8"][batch]
        lines.append(
            f"| `{r.format}` | {100 * acc.compressed.top1:.2f}% | **{100 * q.accuracy.top1:.2f}%** | "
            f"{100 * (acc.compressed.top1 - q.accuracy.top1):.2f} | {acc.samples:,} | {onnx:,} | "
            f"{s.artifacts['model.onnx']:,} ({s.artifacts['model.onnx'] / onnx:.3f}) | "
            f"{q.bytes:,} ({q.bytes / onnx:.3f}) | {q.assignment} | {batch} | {float_ms.original_ms:.2f} | "
            f"{float_ms.compressed_ms:.2f} | {int8_ms.compressed_ms:.2f} |")
    return lines


def bqn_row(directory: Path) -> str:
    from tnncompress.data import load_data
    from tnncompress.evaluate import evaluate
    from tnncompress.export.quantize import OnnxModule

    r = read_report(directory / "report.json")
    graph = (directory / "model.onnx").read_bytes()
    test = load_data(r.recipe["data"]["spec"], "test", input_size=tuple(r.input_size))
    onnx_top1 = evaluate(OnnxModule(graph), test).top1
    s = r.sizes
    return (f"| {r.bqn.bits} bits, `{r.format}` | {100 * r.bqn.float_student.top1:.2f}% | {100 * r.bqn.map.top1:.2f}% "
            f"({r.bqn.map.samples:,}) | **{100 * onnx_top1:.2f}%** ({len(test):,}) | {len(graph):,} | "
            f"{len(graph) / s.original['onnx']:.3f} | {s.artifacts['model.safetensors']:,} | opset {r.onnx.opset}, "
            f"folded: {r.onnx.folded} |")


def main() -> None:
    if "--bqn" in sys.argv:
        print("| BQN | float student top-1 | MAP top-1, PyTorch (samples) | model.onnx top-1, onnxruntime (samples) | "
              "model.onnx bytes | vs original ONNX | model.safetensors bytes | graph |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        print(bqn_row(Path(sys.argv[sys.argv.index("--bqn") + 1])))
        return
    print("| format | float top-1 | INT8 top-1 (onnxruntime) | drop (points) | test samples | original ONNX bytes "
          "| model.onnx bytes (ratio) | model.int8.onnx bytes (ratio) | INT8 forms | batch | original ms | "
          "model.onnx ms | model.int8.onnx ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for directory in sys.argv[1:]:
        print("\n".join(rows(Path(directory))))


if __name__ == "__main__":
    main()
