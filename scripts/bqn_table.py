"""The RESULTS.md BQN table: a trained model's weights given a quantised posterior at 1, 2 and 4 bits,
against the float model, post-training quantisation and an ensemble of quantised models.

    # the compressed ResNet-32 (a `tnncompress run` output directory, its factors quantised)
    python scripts/bqn_table.py --model DIR --bits 1 2 4 --steps 300 --out benchmarks/results/bqn_resnet32.json
    # the bundled small CNN, every conv and linear weight quantised (the dissertation's setting)
    python scripts/bqn_table.py --model tnncompress/models/checkpoints/small_cnn_fashion_mnist.safetensors \
        --dense --bits 1 2 4 --steps 300 --out benchmarks/results/bqn_small_cnn.json

Per bit width, on the full Fashion-MNIST test set (top-1, NLL, ECE):
- float: the model before quantisation;
- PTQ: every selected weight rounded to the nearest level of the MSE-optimal grid (the BQN's MAP at its
  start);
- E-QNN (5): five QNNs quantised independently by stochastic rounding of the same float weights (mean
  preserving), their softmax probabilities averaged. Not the dissertation's bootstrap-trained ensemble:
  ours costs no training, which is the fair comparison for a post-training tool;
- BQN analytic (NLL: the Theorem 5.2 bound), MC (S = 5) and MAP, after `--steps` updates of the ELBO
  (the `run --bqn-bits` stage's code: tnncompress.bayes).
With `--act-bits A`, the ReLUs are quantised first (as `run --bqn-act-bits`), and every row but the
float one has quantised activations; `--train-float` learns the float parameters with the posterior.
With `--recalibrate N`, every concrete QNN (PTQ, each E-QNN member, each MC sample, the MAP) has its
batch norms re-estimated on N training images first, as `run` does for what it exports.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tnncompress import load  # noqa: E402
from tnncompress.bayes import BayesianQuantizedNetwork, BqnConfig, evaluate_bqn, learn_posterior  # noqa: E402
from tnncompress.bayes.posterior import rounding_probabilities  # noqa: E402
from tnncompress.calibrate import calibration_pool  # noqa: E402
from tnncompress.data import load_data  # noqa: E402
from tnncompress.distill import Context  # noqa: E402
from tnncompress.evaluate import evaluate  # noqa: E402
from tnncompress.io import load_model  # noqa: E402
from tnncompress.pipeline.stages import quantised_activations  # noqa: E402
from tnncompress.schema import to_data  # noqa: E402


def model_of(path: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    p = Path(path)
    if p.is_dir():
        report = json.loads((p / "report.json").read_text())
        return load(p, form="factors"), tuple(report["input_size"])
    loaded = load_model(p)
    return loaded.model, loaded.input_size


@torch.no_grad()
def stochastic_rounding(bqn: BayesianQuantizedNetwork) -> BayesianQuantizedNetwork:
    """A copy whose posterior is pure stochastic rounding of the float weights (no floor)."""
    other = copy.deepcopy(bqn)
    params = dict(other.student.named_parameters())
    for name in other.names:
        post = other.posterior(name)
        p = rounding_probabilities(params[name].double(), post.levels.double(), post.scale.double())
        post.logits.copy_(p.clamp_min(1e-30).log().to(post.logits.dtype))
    return other


def row(bits: int, args, student, train, test) -> dict:
    student, acts = copy.deepcopy(student), None
    limit = args.limit
    if args.act_bits:  # as `run --bqn-act-bits` does: steps fitted, norms re-estimated on the calibration pool
        student, _ = quantised_activations(student, args.act_bits, calibration_pool(train, 2048, 0), "cpu")
        acts = to_data(evaluate(student, test, limit=limit))
    bqn = BayesianQuantizedNetwork(student, bits, args.dense, args.scale == "channel")
    pool = calibration_pool(train, args.recalibrate, 0) if args.recalibrate else None
    start = evaluate_bqn(bqn, test, args.samples, limit=limit, pool=pool)
    eqnn = evaluate_bqn(stochastic_rounding(bqn), test, 5, limit=limit, pool=pool).mc
    config = BqnConfig(bits=bits, steps=args.steps, lr=args.lr, lam=args.lam, batch_size=args.batch,
                       sharpen=args.sharpen, act_bits=args.act_bits, train_float=args.train_float)
    t0 = time.perf_counter()
    training = learn_posterior(bqn, None, train, config, Context(seed=0))
    seconds = time.perf_counter() - t0
    end = evaluate_bqn(bqn, test, args.samples, limit=limit, pool=pool)
    return {"bits": bits, "act_bits": args.act_bits, "train_float": args.train_float,
            "float_weights_quantised_activations": acts, "ptq": to_data(start.map), "eqnn5": to_data(eqnn),
            "analytic": to_data(end.analytic), "mc": to_data(end.mc), "map": to_data(end.map), "size": bqn.size(),
            "training": training,
            "seconds_per_step": seconds / max(training["steps"], 1)}


def table(result: dict) -> str:
    f = result["float"]
    lines = ["| bits | model | top-1 | error | NLL | ECE |", "|---:|---|---:|---:|---:|---:|",
             f"| 32 | float | {100 * f['top1']:.2f}% | {100 * (1 - f['top1']):.2f}% | {f['nll']:.4f} | "
             f"{f['ece']:.4f} |"]
    names = (("ptq", "PTQ (round to nearest)"), ("eqnn5", "E-QNN, 5 stochastic roundings"),
             ("analytic", "BQN analytic (NLL: Thm 5.2 expression; an approximation here, not a bound)"),
             ("mc", "BQN MC, S = 5"), ("map", "BQN MAP"))
    for r in result["rows"]:
        acts = r.get("act_bits")
        for key, name in (("float_weights_quantised_activations", f"float weights, {acts}-bit activations"),
                          *names) if acts else names:
            m = r[key]
            width = f"{r['bits']} / a{acts}" if acts else f"{r['bits']}"
            lines.append(f"| {width} | {name} | {100 * m['top1']:.2f}% | {100 * (1 - m['top1']):.2f}% | "
                         f"{m['nll']:.4f} | {m['ece']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a run output directory or a checkpoint")
    ap.add_argument("--dense", action="store_true", help="quantise dense convolutions and linear layers too")
    ap.add_argument("--scale", choices=["channel", "tensor"], default="channel")
    ap.add_argument("--bits", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--lam", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sharpen", type=float, default=100.0, help="run --bqn-sharpen")
    ap.add_argument("--recalibrate", type=int, default=0,
                    help="training images on which each concrete QNN's batch norms are re-estimated (PTQ, "
                         "E-QNN members, MC samples, MAP alike; run --bqn-recalibrate)")
    ap.add_argument("--act-bits", type=int, default=0, help="run --bqn-act-bits (1: sign, 2-4: quantised ReLU)")
    ap.add_argument("--train-float", action="store_true", help="run --bqn-train-float")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="test samples (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    student, size = model_of(args.model)
    student.eval()
    train = load_data("fashion-mnist", "train", input_size=size)
    test = load_data("fashion-mnist", "test", input_size=size)
    result = {"command": " ".join(sys.argv), "float": to_data(evaluate(student, test, limit=args.limit)),
              "rows": []}
    for bits in args.bits:
        result["rows"].append(row(bits, args, student, train, test))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(table(result), file=sys.stderr)
    print(table(result))


if __name__ == "__main__":
    main()
