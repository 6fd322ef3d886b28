"""Benchmark: the training step of the BQN stage against a plain E2E-KD step, and the MAP QNN's size.

The bundled ResNet-32 teacher compressed with `tk` at 0.1 (Layer-Decomp only: the timing does not depend
on the weights), batch 128, each step the real one: E2E-KD (teacher forward, student forward and backward,
Adam) from tnncompress.distill; BQN (moments propagated through the student, the ELBO, backward, Adam on
the logits, scales and temperature) from tnncompress.bayes. Medians, timed round-robin in one run
(tnncompress.timing.interleaved_medians). Sizes: the
MAP QNN as exported (packed codes, float32 scales and the float rest) against the float32 student.

    python benchmarks/bench_bqn.py --out benchmarks/results/bqn_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, today  # noqa: E402
from tnncompress.bayes import BayesianQuantizedNetwork  # noqa: E402
from tnncompress.bayes.activations import fit_steps, quantize_activations  # noqa: E402
from tnncompress.bayes.objective import elbo_loss  # noqa: E402
from tnncompress.compress import CompressConfig, compress_model, plan_model, select_layers  # noqa: E402
from tnncompress.distill import Context, DistillConfig, KdModels, PhaseSpec, build_phase, find_units  # noqa: E402
from tnncompress.formats import planned  # noqa: E402
from tnncompress.io import load_model  # noqa: E402
from tnncompress.timing import interleaved_medians  # noqa: E402

TEACHER = Path(__file__).resolve().parents[1] / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bits", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--act-bits", type=int, nargs="+", default=[0],
                    help="activation bits of the BQN rows (run --bqn-act-bits; 0: float activations)")
    ap.add_argument("--min-time", type=float, default=20.0, help="seconds of round-robin timing")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    loaded = load_model(TEACHER)
    size = loaded.input_size
    choices = select_layers(loaded.model, size)
    student, _ = compress_model(loaded.model, plan_model(loaded.model, choices, CompressConfig(format="tk", rate=0.1)),
                                seed=0)
    student.eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch, *size, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
    result = {"machine": machine(), "date": today(), "command": " ".join(sys.argv), "batch": args.batch, "rows": []}

    config = DistillConfig(algorithm="e2e", loss="kl", batch_size=args.batch)
    kd_student = copy.deepcopy(student)
    units = find_units(kd_student, size, "layer")
    steps = {}
    with planned(kd_student, "measure"):
        phase = build_phase(PhaseSpec(0, "e2e", None, 10, 1), KdModels(loaded.model, kd_student, units), config,
                            Context())
        kd_opt = torch.optim.Adam(phase.params, lr=1e-5)

        def kd_step():
            kd_opt.zero_grad(set_to_none=True)
            phase.loss(x, y).backward()
            kd_opt.step()

        steps["e2e"] = kd_step
        for p in student.parameters():
            p.requires_grad_(False)
        networks = {}
        for bits in args.bits:
            for act in args.act_bits:
                net = student
                if act:  # quantised ReLUs, steps fitted on the timing batch
                    net = quantize_activations(copy.deepcopy(student), act)
                    fit_steps(net, [x])
                bqn = networks[bits, act] = BayesianQuantizedNetwork(net, bits)
                opt = torch.optim.Adam(bqn.trainable(), lr=1e-5)

                def bqn_step(opt=opt, bqn=bqn):
                    opt.zero_grad(set_to_none=True)
                    elbo_loss(bqn.analytic(x), y, bqn.temperature, list(bqn.posteriors.values()), 1e-3,
                              60000).backward()
                    opt.step()

                steps[bits, act] = bqn_step
        times = interleaved_medians(steps, min_time=args.min_time, max_rounds=15)
    kd = times["e2e"]
    result["e2e_step_seconds"] = kd
    print(f"E2E-KD step: {kd * 1e3:.0f} ms", file=sys.stderr)
    for bits, act in networks:
        step, size_ = times[bits, act], networks[bits, act].size()
        result["rows"].append({"bits": bits, "act_bits": act, "bqn_step_seconds": step, "vs_e2e": step / kd,
                               "size": size_})
        print(f"{bits} bit, activations {act or 'float'}: BQN step {step * 1e3:.0f} ms ({step / kd:.2f}x "
              f"E2E-KD); MAP QNN {size_['bytes']:,} B vs float32 {size_['float32_bytes']:,} B "
              f"({size_['ratio']:.2f}x)", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
