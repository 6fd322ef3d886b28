"""The INT8 calibration methods compared on the ResNet-32 teacher (RESULTS.md, "INT8"):
`python scripts/int8_calibration.py [--images 2000] [--calibration 512]`.

The teacher's float graph quantized by tnncompress's INT8 path with each calibration method, calibrated
on seeded training images; top-1 on the first test images, label agreement and relative logit error against
float, and the calibration time."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tnncompress.data import load_data  # noqa: E402
from tnncompress.export import INPUT, OUTPUT, session, to_onnx  # noqa: E402
from tnncompress.export.quantize import CALIBRATION, quantize_int8  # noqa: E402
from tnncompress.io import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--calibration", type=int, default=512)
    args = parser.parse_args()
    loaded = load_model(ROOT / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors")
    graph = to_onnx(loaded.model, loaded.input_size)
    train = load_data("fashion-mnist", "train", input_size=loaded.input_size)
    test = load_data("fashion-mnist", "test", input_size=loaded.input_size)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.calibration]
    calibration = torch.stack([train.dataset[int(i)][0] for i in order]).numpy()
    x = torch.stack([test.dataset[i][0] for i in range(args.images)]).numpy()
    y = np.array([int(test.dataset[i][1]) for i in range(args.images)])

    def logits(g: bytes) -> np.ndarray:
        s = session(g)
        return np.concatenate([s.run([OUTPUT], {INPUT: x[i:i + 250]})[0] for i in range(0, len(x), 250)])

    reference = logits(graph)
    print(f"| method | top-1 | labels as float | relative logit error | calibration s |\n|---|---:|---:|---:|---:|\n"
          f"| float | {100 * (reference.argmax(1) == y).mean():.2f}% | | | |")
    for method in CALIBRATION:
        t0 = time.perf_counter()
        int8 = quantize_int8(graph, np.split(calibration, len(calibration) // 64), method)
        seconds = time.perf_counter() - t0
        out = logits(int8)
        print(f"| {method} | {100 * (out.argmax(1) == y).mean():.2f}% | "
              f"{100 * (out.argmax(1) == reference.argmax(1)).mean():.2f}% | "
              f"{np.linalg.norm(out - reference) / np.linalg.norm(reference):.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
