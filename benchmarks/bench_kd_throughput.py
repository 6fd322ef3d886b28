"""Benchmark: training throughput (images/s) of a Seq-KD step and an E2E-KD step against fine-tuning
the dense teacher, on the reference ResNet-32 (Fashion-MNIST input, 1x28x28).

Each step is the real one (tnncompress.distill's phases: forward, loss, backward, Adam update) on a
fixed batch. "dense fine-tune" is the teacher trained on cross-entropy with all its parameters; "E2E-KD"
is the teacher's no-grad forward plus the student's forward and backward; "Seq-KD" is the mean over all
units of one unit's step (the teacher's and the student's forward up to the unit, then the unit's
forward and backward); "cached Seq-KD" is the same unit step on stored (unit input, teacher output)
pairs, the step of `--seq-cache` (layer units, and the residual blocks of `--kd auto`). Candidates are
timed round-robin (medians), so ratios come from one run. The cache's size for a pool of 2,048
calibration images is measured by building it.

    python benchmarks/bench_kd_throughput.py --formats mcp cp mtt --rate 0.1 --batch 128 \
        --out benchmarks/results/kd_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, today  # noqa: E402
from tnncompress.calibrate import ActivationCache, CalibrationPool  # noqa: E402
from tnncompress.capture import capture  # noqa: E402
from tnncompress.compress import CompressConfig, compress_model, plan_model, select_layers  # noqa: E402
from tnncompress.distill import (  # noqa: E402
    Context,
    DistillConfig,
    KdModels,
    PhaseSpec,
    build_phase,
    find_units,
)
from tnncompress.formats import TensorizedLayer  # noqa: E402
from tnncompress.io import load_model  # noqa: E402
from tnncompress.timing import interleaved_medians  # noqa: E402

TEACHER = Path(__file__).resolve().parents[1] / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"


def stepper(phase):
    optimizer = torch.optim.Adam(phase.params, lr=1e-4)

    def step(x, y):
        loss = phase.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", nargs="+", default=["mcp", "cp", "mtt"])
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-time", type=float, default=20.0, help="seconds of timing rounds (at least 5 rounds)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    ctx = Context(device=args.device)
    teacher = load_model(str(TEACHER)).model.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    dense = load_model(str(TEACHER)).model.to(args.device).train()
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1e-4)

    def dense_step():
        loss = F.cross_entropy(dense(x), y)
        dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        dense_opt.step()

    runs = {"dense fine-tune": dense_step}
    cache_bytes: dict[str, int] = {}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    for fmt in args.formats:
        choices = select_layers(teacher, (1, 28, 28), [], [])
        plans = plan_model(teacher, choices, CompressConfig(format=fmt, rate=args.rate))
        student = compress_model(teacher, plans)[0].to(args.device).eval()
        for m in student.modules():
            if isinstance(m, TensorizedLayer):
                m.optimize = "measure"
        for p in student.parameters():
            p.requires_grad_(False)
        teacher.to(args.device)
        config = DistillConfig(algorithm="seq", seq_cache=False)
        units = find_units(student, (1, 28, 28), "layer")
        models = KdModels(teacher, student, units)
        phases = [build_phase(PhaseSpec(i, "seq", u, 1, len(units)), models, config, ctx) for i, u in enumerate(units)]
        seq_steps = [stepper(p) for p in phases]  # parameters of every unit train (each step its own)
        for p in phases:
            for q in p.params:
                q.requires_grad_(True)
        e2e = stepper(build_phase(PhaseSpec(0, "e2e", None, 1, 1), models, config, ctx))

        def seq_all(seq_steps=seq_steps):
            with autocast:
                for s in seq_steps:
                    s(x, y)

        def e2e_step(e2e=e2e):
            with autocast:
                e2e(x, y)
        seq_all(), e2e_step()  # the "measure" plans are timed here, outside the benchmark
        runs[f"{fmt} Seq-KD (mean over {len(units)} units)"] = seq_all
        runs[f"{fmt} E2E-KD"] = e2e_step
        cached_config = DistillConfig(algorithm="seq", seq_cache=True)
        for kind in ("layer", "block"):
            kind_units = find_units(student, (1, 28, 28), kind)
            pairs = [(capture(student, x, inputs=(u.name,))[(u.name, "input")],
                      capture(teacher, x, outputs=(u.output,))[(u.output, "output")]) for u in kind_units]
            cached_phases = [build_phase(PhaseSpec(i, "seq", u, 1, len(kind_units)),
                                         KdModels(teacher, student, kind_units), cached_config, ctx)
                             for i, u in enumerate(kind_units)]
            for p in cached_phases:  # building a phase switches the others' parameters off
                for q in p.params:
                    q.requires_grad_(True)
            steps = [stepper(p) for p in cached_phases]

            def cached_all(steps=steps, pairs=pairs):
                with autocast:
                    for s, (inputs, target) in zip(steps, pairs, strict=True):
                        s(inputs, target)
            cached_all()
            runs[f"{fmt} cached Seq-KD, {kind} units (mean over {len(kind_units)} units)"] = cached_all
            pool = CalibrationPool(torch.randn(2048, 1, 28, 28, generator=g), torch.zeros(2048), "random")
            cache = ActivationCache(teacher, pool, [], [u.output for u in kind_units], memory_budget=1 << 40)
            cache_bytes[f"{fmt} {kind} units"] = cache.report.bytes
            cache.close()
    times = interleaved_medians({k: v for k, v in runs.items()}, min_time=args.min_time, max_rounds=15,
                                min_rounds=5)
    rows = []
    for name, seconds in times.items():
        if "Seq-KD" in name:
            seconds /= int(name.split("over ")[1].split()[0])
        rows.append({"step": name, "ms": 1e3 * seconds, "images_per_s": args.batch / seconds})
    base = next(r for r in rows if r["step"] == "dense fine-tune")
    for r in rows:
        r["vs_dense_fine_tune"] = r["images_per_s"] / base["images_per_s"]
    result = {"machine": machine(), "date": today(), "device": args.device, "batch": args.batch, "rate": args.rate,
              "command": "python " + " ".join(sys.argv), "rows": rows,
              "cache_bytes_2048_images": cache_bytes}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| step | images/s | vs dense fine-tune |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['images_per_s']:.0f} | {r['vs_dense_fine_tune']:.2f}x |")
    for name, size in cache_bytes.items():
        print(f"cache of 2,048 images, {name}: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
