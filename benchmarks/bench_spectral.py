"""Benchmark: the cost of spectral analysis and control.

Part 1, every layer's singular values of torchvision ResNet-50 at 224 x 224 (float64): the FFT path on
the dense model's kernels, the core trick on a `tk` 0.1 model's factors (frames QR'd, the small core's
FFT), and power iteration on the true (zero-padded) operator at 10 and 50 iterations, with its gap to the
certified upper bound, (upper - power iteration) / upper, which bounds its error from below.

Part 2, the training-step overhead of clipping: on the ResNet-32 teacher compressed with `tk` 0.1, one
E2E-KD step (batch 128, forward, KL loss, backward, Adam) against one projection of every compressed
layer (clip:C through the core; divide:C with one power iteration). Clipping every N steps costs
projection / (N x step) per step; the times are medians measured in one run.

    python benchmarks/bench_spectral.py --out benchmarks/results/spectral_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, today  # noqa: E402
from tnncompress.compress import CompressConfig, compress_model, plan_model, select_layers  # noqa: E402
from tnncompress.distill import Context, DistillConfig, KdModels, PhaseSpec, build_phase, find_units  # noqa: E402
from tnncompress.formats import TensorizedLayer  # noqa: E402
from tnncompress.io import load_model  # noqa: E402
from tnncompress.spectral import SPECTRAL_LAYERS, SpectralControl, layer_spectrum  # noqa: E402
from tnncompress.spectral.config import SpectralConfig  # noqa: E402
from tnncompress.spectral.layers import _grid, _in_channels, linear_part, power_iteration  # noqa: E402
from tnncompress.spectral.model import layer_inputs  # noqa: E402
from tnncompress.timing import median_seconds  # noqa: E402

TEACHER = Path(__file__).resolve().parents[1] / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"


def compressed(model, input_size, fmt: str, rate: float):
    choices = select_layers(model, input_size)
    plans = plan_model(model, choices, CompressConfig(format=fmt, rate=rate))
    student, _ = compress_model(model, plans, seed=0)
    return student.eval()


def all_layers(model, input_size) -> tuple[float, dict[str, float]]:
    """(seconds for every layer's singular values, each layer's sigma_max: exact or the upper bound)."""
    sizes = layer_inputs(model, input_size)
    t0 = time.perf_counter()
    uppers = {}
    for name, m in model.named_modules():
        if isinstance(m, SPECTRAL_LAYERS) and name in sizes:
            uppers[name] = layer_spectrum(name, m, sizes[name], power_iters=1).sigma_max
    return time.perf_counter() - t0, uppers


def power_only(model, input_size, iters: int, uppers: dict[str, float]) -> tuple[float, list[float]]:
    """Seconds of `iters` power iterations on every zero-padded layer, and each one's gap to the upper bound."""
    sizes = layer_inputs(model, input_size)
    total, gaps = 0.0, []
    for name, m in model.named_modules():
        if not isinstance(m, SPECTRAL_LAYERS) or name not in sizes or sizes[name] == (1, 1):
            continue
        grid, exact = _grid(name, m, sizes[name])
        if exact:
            continue
        p = next(m.parameters())
        x = torch.randn(1, _in_channels(m), *sizes[name], generator=torch.Generator().manual_seed(0)).to(p)
        t0 = time.perf_counter()
        lower, _ = power_iteration(linear_part(m), x, iters)
        total += time.perf_counter() - t0
        gaps.append((uppers[name] - lower) / uppers[name])
    return total, gaps


def spectra(args) -> dict:
    torch.manual_seed(0)
    dense = torchvision.models.resnet50(num_classes=1000).eval()
    size = (3, 224, 224)
    out = {}
    seconds, uppers = all_layers(dense, size)
    out["dense_fft"] = {"seconds": seconds, "layers": len(uppers), "note": "FFT of every dense kernel (and one "
                        "power-iteration step on each zero-padded layer)"}
    print(f"dense FFT: {seconds:.1f} s for {len(uppers)} layers", file=sys.stderr)
    student = compressed(dense, size, "tk", 0.1)
    seconds, n = all_layers(student, size)
    out["tk_core"] = {"seconds": seconds, "layers": len(n),
                      "core_layers": sum(isinstance(m, TensorizedLayer) for m in student.modules())}
    print(f"tk 0.1 core: {seconds:.1f} s for {len(n)} layers", file=sys.stderr)
    for iters in args.power_iters:
        seconds, gaps = power_only(dense, size, iters, uppers)
        gaps.sort()
        out[f"power_{iters}"] = {"seconds": seconds, "layers": len(gaps), "gap_median": gaps[len(gaps) // 2],
                                 "gap_max": gaps[-1]}
        print(f"power iteration x{iters}: {seconds:.1f} s, gap median {gaps[len(gaps) // 2]:.3g} max {gaps[-1]:.3g}",
              file=sys.stderr)
    return out


def overhead(args) -> dict:
    loaded = load_model(TEACHER)
    size = loaded.input_size
    student = compressed(loaded.model, size, "tk", 0.1)
    ctx = Context()
    config = DistillConfig(algorithm="e2e", loss="kl", batch_size=args.batch)
    units = find_units(student, size, "layer")
    phase = build_phase(PhaseSpec(0, "e2e", None, 10, 1), KdModels(loaded.model, student, units), config, ctx)
    optimizer = torch.optim.Adam(phase.params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch, *size, generator=g), torch.randint(0, 10, (args.batch,), generator=g)

    def step():
        optimizer.zero_grad(set_to_none=True)
        phase.loss(x, y).backward()
        optimizer.step()

    step_s = median_seconds(step, min_time=1.0, max_reps=7)
    rows = {"step_seconds": step_s}
    for constraint in ("clip:1", "divide:1"):
        control = SpectralControl(student, size, SpectralConfig(constraint=constraint))
        project_s = median_seconds(control.project, min_time=1.0, max_reps=5)
        rows[constraint] = {"projection_seconds": project_s,
                            "overhead": {str(n): project_s / (n * step_s) for n in (1, 10, 100)}}
        print(f"{constraint}: step {step_s * 1e3:.0f} ms, projection {project_s * 1e3:.0f} ms, overhead every "
              + ", ".join(f"{n}: {100 * project_s / (n * step_s):.1f}%" for n in (1, 10, 100)), file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--power-iters", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--skip-resnet50", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    result = {"machine": machine(), "date": today(), "command": " ".join(sys.argv)}
    result["overhead"] = overhead(args)
    if not args.skip_resnet50:
        result["resnet50"] = spectra(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
