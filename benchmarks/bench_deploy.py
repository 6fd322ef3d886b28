"""Deployment speed: the default (measured) form against the all-dense and all-factors forms, in
onnxruntime and in eager PyTorch, at batch 1 and 32, for ResNet-32 (28x28) and ResNet-50 (224x224).

Per model, format and target (rate 0.1 of the parameters; 25% of the FLOPs by `--rate-by flops`):
  * the default ONNX graph (`--deploy-form auto`: timed in onnxruntime), the all-dense graph and the
    all-factors graph (every layer its FLOP-optimal chain), timed in onnxruntime against the original
    model's graph, all sessions round-robin, spinning off (see export.onnx_graph.session);
  * in eager PyTorch, the model `tnncompress.load(DIR)` gives (`--load-form auto`: timed in PyTorch),
    the all-dense and the all-factors model, against the original, round-robin;
speed-up = original time / that form's time (medians). ResNet-32 is the bundled Fashion-MNIST teacher,
compressed by Layer-Decomp; ResNet-50 is torchvision's with seeded random weights, and its factors are
drawn at random, scaled to the kernel's norm (speed does not depend on the values, and Layer-Decomp of
ResNet-50 is benchmarked on its own).

    python benchmarks/bench_deploy.py --out benchmarks/results/deploy_cpu.json [--models resnet32 resnet50]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import load_rows, save_row  # noqa: E402
from tnncompress.compress import compress_model, plan_layer, select_layers  # noqa: E402
from tnncompress.export import INPUT, OUTPUT, deployable, session, to_onnx  # noqa: E402
from tnncompress.formats import TensorizedConv2d  # noqa: E402
from tnncompress.io import load_model  # noqa: E402
from tnncompress.timing import interleaved_medians  # noqa: E402

FORMATS = ("cp", "tk", "tt", "mcp", "mtt")
TARGETS = (("params", 0.1), ("flops", 0.25))
BATCHES = (1, 32)


def resnet32():
    loaded = load_model(ROOT / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors")
    return loaded.model.eval(), loaded.input_size


def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval(), (3, 224, 224)


def random_resnet50_student(model, plans):
    """Random factors with the planned ranks, scaled so each rebuilt kernel has the original's norm."""
    import copy

    student = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    for plan in plans:
        original = student.get_submodule(plan.name)
        module = TensorizedConv2d(plan.format, plan.shape, plan.ranks, plan.tensorization, stride=original.stride,
                                  padding=original.padding, dilation=original.dilation,
                                  bias=original.bias is not None)
        with torch.no_grad():
            for p in module.factors:
                p.copy_(torch.randn(p.shape, generator=g))
            scale = (original.weight.norm() / module.dense_kernel().norm()) ** (1 / len(module.factors))
            for p in module.factors:
                p.mul_(scale)
            if original.bias is not None:
                module.bias.copy_(original.bias)
        student.set_submodule(plan.name, module)
    return student.eval()


def _time(runs: dict, min_time: float) -> dict[str, float]:
    return {k: 1e3 * v for k, v in interleaved_medians(runs, min_time=min_time, max_rounds=20, min_rounds=3).items()}


def cell(model, size, name: str, fmt: str, rate_by: str, rate: float, min_time: float, multiple: int = 1) -> dict:
    choices = [c for c in select_layers(model, size) if c.status == "compress"]
    plans = [plan_layer(model.get_submodule(c.info.name), c.info, fmt, rate, rate_by, multiple=multiple)
             for c in choices]
    plans = [p for p in plans if p.ranks is not None]
    t0 = time.perf_counter()
    student = compress_model(model, plans)[0] if name == "resnet32" else random_resnet50_student(model, plans)
    decomp = time.perf_counter() - t0
    flops = sum(p.flops_compressed for p in plans) / max(sum(p.flops_original for p in plans), 1)
    t0 = time.perf_counter()
    onnx_default, onnx_decision = deployable(student, size, BATCHES, "auto", runtime="onnxruntime")
    t_onnx = time.perf_counter() - t0
    t0 = time.perf_counter()
    eager_default, eager_decision = deployable(student, size, BATCHES, "auto", runtime="pytorch")
    t_eager = time.perf_counter() - t0
    forms = {"default": (onnx_default, eager_default),
             "dense": (deployable(student, size, BATCHES, form="dense")[0],) * 2,
             "factors": (deployable(student, size, BATCHES, form="factors")[0],) * 2}
    graphs = {"original": to_onnx(model, size), **{k: to_onnx(m[0], size) for k, m in forms.items()}}
    sessions = {k: session(g) for k, g in graphs.items()}
    eager = {"original": model, **{k: m[1] for k, m in forms.items()}}
    row = {"model": name, "format": fmt, "rate_by": rate_by, "rate": rate, "rank_multiple": multiple,
           "layers": len(plans),
           "flops_ratio": flops, "init_s": decomp, "decide_onnx_s": t_onnx, "decide_eager_s": t_eager,
           "onnx_picked": onnx_decision.picked, "eager_picked": eager_decision.picked,
           "onnx_factor_layers": sum(c.form == "factors" for c in onnx_decision.layers),
           "eager_factor_layers": sum(c.form == "factors" for c in eager_decision.layers),
           "onnx_ms": {}, "eager_ms": {}}
    g = torch.Generator().manual_seed(1)
    for batch in BATCHES:
        x = torch.randn(batch, *size, generator=g)
        feed = {INPUT: x.numpy().astype(np.float32)}
        runs = {k: (lambda s=s, feed=feed: s.run([OUTPUT], feed)) for k, s in sessions.items()}
        row["onnx_ms"][str(batch)] = _time(runs, min_time)
        with torch.inference_mode():
            row["eager_ms"][str(batch)] = _time({k: (lambda m=m, x=x: m(x)) for k, m in eager.items()}, min_time)
    with torch.inference_mode():  # the default forms compute the compressed model
        x = torch.randn(2, *size, generator=g)
        want = student.eval()(x)
        row["max_abs_error"] = max(float((eager_default(x) - want).abs().max()),
                                   float(np.abs(sessions["default"].run([OUTPUT], {INPUT: x.numpy()})[0]
                                                - want.numpy()).max()))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | format | target | FLOPs | runtime | batch | default | dense | factors | default / best pure |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        target = f"{r['rate']:.0%} {'params' if r['rate_by'] == 'params' else 'FLOPs'}"
        if r.get("rank_multiple", 1) > 1:
            target += f", ranks x{r['rank_multiple']}"
        for runtime in ("onnx", "eager"):
            for batch, ms in r[f"{runtime}_ms"].items():
                s = {k: ms["original"] / ms[k] for k in ("default", "dense", "factors")}
                lines.append(f"| {r['model']} | `{r['format']}` | {target} | {r['flops_ratio']:.3f} | "
                             f"{'onnxruntime' if runtime == 'onnx' else 'PyTorch'} | {batch} | "
                             f"**{s['default']:.2f}x** | {s['dense']:.2f}x | {s['factors']:.2f}x | "
                             f"{s['default'] / max(s['dense'], s['factors']):.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet32", "resnet50"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS))
    parser.add_argument("--targets", nargs="+", default=[f"{b}:{r}" for b, r in TARGETS],
                        help="RATE_BY:RATE cells (default: params:0.1 flops:0.25)")
    parser.add_argument("--rank-multiple", type=int, default=1, help="run --rank-multiple")
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    doc = load_rows(args.out)
    if not args.table:
        for name in args.models:
            model, size = {"resnet32": resnet32, "resnet50": resnet50}[name]()
            for fmt in args.formats:
                for rate_by, rate in ((t.split(":")[0], float(t.split(":")[1])) for t in args.targets):
                    key = (name, fmt, rate_by, rate, args.rank_multiple)
                    if any((r["model"], r["format"], r["rate_by"], r["rate"], r.get("rank_multiple", 1)) == key
                           for r in doc["rows"]):
                        continue  # resumable: a finished cell is kept
                    row = cell(model, size, name, fmt, rate_by, rate, 1.0 if name == "resnet32" else 0.5,
                               args.rank_multiple)
                    save_row(args.out, doc, row)
                    print(json.dumps({k: v for k, v in row.items() if not k.endswith("_ms")}), file=sys.stderr)
    print(table(doc["rows"]))


if __name__ == "__main__":
    main()
