"""Run what only a GPU can check, and record what it measured: the CUDA paths have never run on this
project's own machines (CI and the development machine have no GPU).

    python scripts/gpu_check.py --out benchmarks/results/gpu_check.json [--budget 4m]

1. the device tests (tests/test_device.py) with TNNCOMPRESS_TEST_DEVICE=cuda;
2. the demo (`make demo`'s command) on the GPU: wall clock, seconds per stage, how distillation spent its
   budget, the accuracy;
3. a torchrun distillation on every GPU present (E2E-KD, a fixed number of steps) against the same run
   in one process: the run time of each and the largest difference between their weights.

Exits 2 (with one line) on a machine without CUDA. Every step's outcome goes to --out as it finishes,
so a step that fails still leaves what came before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import load_rows, save_row  # noqa: E402

TEACHER = ROOT / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"
CLI = [sys.executable, "-m", "tnncompress.cli.app"]


def _run(command: list[str], env: dict | None = None) -> tuple[int, float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    return done.returncode, round(time.perf_counter() - started, 1), (done.stdout + done.stderr)[-4000:]


def device_tests() -> dict:
    code, seconds, output = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "tests/test_device.py"], {"TNNCOMPRESS_TEST_DEVICE": "cuda"})
    return {"step": "device tests on cuda", "exit_code": code, "wall_s": seconds, "tail": output[-800:]}


def demo(out: Path, budget: str) -> dict:
    code, seconds, output = _run([*CLI, "run", str(TEACHER), "--format", "mcp", "--rate", "0.1", "--data",
                                  "fashion-mnist", "--kd", "auto", "--kd-budget", budget, "--device", "cuda",
                                  "--out", str(out), "--force", "-q"])
    row = {"step": f"demo on cuda (--kd-budget {budget})", "exit_code": code, "wall_s": seconds}
    if code == 0:
        report = json.loads((out / "report.json").read_text())
        row |= {"stages_s": report["seconds"], "top1": report["accuracy"]["compressed"]["top1"],
                "distillation_s": (report.get("distillation") or {}).get("seconds")}
    else:
        row["tail"] = output[-800:]
    return row


def torchrun(tmp: Path, gpus: int) -> dict:
    args = ["run", str(ROOT / "tnncompress/models/checkpoints/small_cnn_fashion_mnist.safetensors"), "-f", "cp",
            "-r", "0.2", "-d", "fashion-mnist", "--kd", "e2e", "--kd-steps", "200", "--kd-batch-size", "128",
            "--init", "weights", "--no-latency", "--device", "cuda", "-q"]
    single = _run([*CLI, *args, "--out", str(tmp / "single"), "--force"])
    multi = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus),
                  "-m", "tnncompress.cli.app", *args, "--out", str(tmp / "multi"), "--force"])
    row = {"step": f"torchrun E2E-KD on {gpus} GPU(s) against one process", "exit_codes": [single[0], multi[0]],
           "wall_s": [single[1], multi[1]]}
    if single[0] == 0 and multi[0] == 0:
        from safetensors.torch import load_file

        a, b = load_file(tmp / "single" / "model.safetensors"), load_file(tmp / "multi" / "model.safetensors")
        row["max_abs_weight_difference"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    else:
        row["tail"] = (single[2] if single[0] else multi[2])[-800:]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="4m")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check", file=sys.stderr)
        sys.exit(2)
    doc = load_rows(opts.out)
    doc["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    with tempfile.TemporaryDirectory() as tmp:
        for step in (device_tests, lambda: demo(Path(tmp) / "demo", opts.budget),
                     lambda: torchrun(Path(tmp), torch.cuda.device_count())):
            row = step()
            print(json.dumps(row), flush=True)
            save_row(opts.out, doc, row)


if __name__ == "__main__":
    main()
