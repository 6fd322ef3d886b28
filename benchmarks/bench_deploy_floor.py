"""How fast could a compressed model be at all? The speed-up of a model whose compressible
convolutions cost (almost) nothing, in onnxruntime, against the original: an upper bound on the
speed-up of any factorisation of those layers.

Each convolution the pipeline would compress (`select_layers`, the default selection) is replaced by a
1x1 convolution with one weight per output channel (groups = input channels, stride kept): the cheapest
operation that still reads the layer's input once and writes its output once, as every factor chain
must, and into which onnxruntime folds the batch norm and the ReLU after it as it does into a chain's
last convolution. Everything else (the first convolution, batch norms of the shortcuts, additions,
pooling, the classifier) is the original's. Round-robin medians, spinning off, one run.

With `--layers FORMAT`, also per compressed layer of ResNet-32 (rate 0.1, `--rank-multiple`): the
one-layer graph of the dense layer, of each candidate chain and of the stand-in, at batch 32: how far
each layer's best chain is from the least any chain could cost.

    python benchmarks/bench_deploy_floor.py --out benchmarks/results/deploy_floor_cpu.json [--layers cp]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_deploy import resnet32, resnet50  # noqa: E402
from benchmarks.common import machine, today  # noqa: E402
from tnncompress.compress import compress_model, plan_layer, select_layers  # noqa: E402
from tnncompress.export import INPUT, OUTPUT, session, tensorized_inputs, to_onnx  # noqa: E402
from tnncompress.export.choose import measured_choices  # noqa: E402
from tnncompress.timing import interleaved_medians  # noqa: E402

BATCHES = (1, 32)


def stand_in(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 convolution with the layer's stride and shapes and max(c_in, c_out) weights: each output
    channel a copy of one input channel (c_out a multiple of c_in) or the sum of c_in / c_out of them."""
    c_in, c_out = conv.in_channels, conv.out_channels
    if c_out % c_in == 0:
        groups = c_in
    elif c_in % c_out == 0:
        groups = c_out
    else:
        raise ValueError(f"{c_in} -> {c_out} channels: neither divides the other")
    out = nn.Conv2d(c_in, c_out, 1, stride=conv.stride, groups=groups, bias=conv.bias is not None)
    with torch.no_grad():
        out.weight.fill_(1.0)
        if out.bias is not None:
            out.bias.zero_()
    return out


def floor_model(model: nn.Module, size: tuple) -> tuple[nn.Module, int]:
    floor = copy.deepcopy(model)
    names = [c.info.name for c in select_layers(model, size) if c.status == "compress"]
    names = [n for n in names if isinstance(model.get_submodule(n), nn.Conv2d)]
    for name in names:
        floor.set_submodule(name, stand_in(model.get_submodule(name)))
    return floor.eval(), len(names)


def row(name: str, model: nn.Module, size: tuple, min_time: float) -> dict:
    floor, replaced = floor_model(model, size)
    sessions = {"original": session(to_onnx(model, size)), "floor": session(to_onnx(floor, size))}
    g = torch.Generator().manual_seed(0)
    ms = {}
    for batch in BATCHES:
        feed = {INPUT: torch.randn(batch, *size, generator=g).numpy().astype(np.float32)}
        runs = {k: (lambda s=s, feed=feed: s.run([OUTPUT], feed)) for k, s in sessions.items()}
        ms[str(batch)] = {k: 1e3 * v for k, v in
                          interleaved_medians(runs, min_time=min_time, max_rounds=40, min_rounds=5).items()}
    return {"model": name, "replaced_layers": replaced, "ms": ms}


def layers(fmt: str, multiple: int, batch: int = 32) -> list[dict]:
    """Per compressed layer of ResNet-32 at rate 0.1: ms of the dense layer, each candidate chain (as the
    deployment decision times them) and the stand-in, as one-layer onnxruntime graphs."""
    model, size = resnet32()
    choices = [c for c in select_layers(model, size) if c.status == "compress"]
    plans = [plan_layer(model.get_submodule(c.info.name), c.info, fmt, 0.1, "params", multiple=multiple)
             for c in choices]
    student = compress_model(model, [p for p in plans if p.ranks is not None])[0].eval()
    inputs = tensorized_inputs(student, size)
    out = []
    for c in measured_choices(student, inputs, [batch], "onnxruntime", min_time=0.2):
        shape = inputs[c.name]
        feed = {INPUT: torch.randn(batch, *shape[1:]).numpy().astype(np.float32)}
        s = session(to_onnx(stand_in(model.get_submodule(c.name)).eval(), tuple(shape[1:])))
        floor = 1e3 * interleaved_medians({"floor": lambda s=s, feed=feed: s.run([OUTPUT], feed)},
                                          min_time=0.2)["floor"]
        ms = {k: v[str(batch)] for k, v in c.ms.items()}
        out.append({"layer": c.name, "input": list(shape[1:]), "ranks": student.get_submodule(c.name).ranks,
                    "ms": ms, "stand_in_ms": floor})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["resnet32", "resnet50"])
    parser.add_argument("--layers", metavar="FORMAT", help="also time ResNet-32's layers in FORMAT at rate 0.1")
    parser.add_argument("--rank-multiple", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        model, size = {"resnet32": resnet32, "resnet50": resnet50}[name]()
        rows.append(row(name, model, size, 2.0 if name == "resnet32" else 4.0))
    doc = {"rows": rows, "machine": machine(), "date": today(), "command": " ".join(sys.argv)}
    if args.layers:
        doc["layers"] = {"format": args.layers, "rank_multiple": args.rank_multiple,
                         "rows": layers(args.layers, args.rank_multiple)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print("| model | layers replaced | batch | original ms | floor ms | speed-up bound |\n"
          "|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for batch, ms in r["ms"].items():
            print(f"| {r['model']} | {r['replaced_layers']} | {batch} | {ms['original']:.2f} | {ms['floor']:.2f} | "
                  f"**{ms['original'] / ms['floor']:.2f}x** |")
    if args.layers:
        print("\n| layers | input | ranks | dense ms | best chain ms | stand-in ms | best chain / stand-in |\n"
              "|---|---|---|---:|---:|---:|---:|")
        for group in ("layer1", "layer2", "layer3"):
            rs = [r for r in doc["layers"]["rows"] if r["layer"].startswith(group + ".")]
            dense = sum(r["ms"]["dense"] for r in rs)
            best = sum(min(v for k, v in r["ms"].items() if k != "dense") for r in rs)
            floor = sum(r["stand_in_ms"] for r in rs)
            ranks = sorted({str(r["ranks"]) for r in rs})
            print(f"| {group} ({len(rs)}) | {'x'.join(map(str, rs[1]['input']))} | {', '.join(ranks)} | {dense:.2f} | "
                  f"{best:.2f} | {floor:.2f} | {best / floor:.2f} |")


if __name__ == "__main__":
    main()
