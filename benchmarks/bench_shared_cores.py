"""The demo on an idle machine and with one core taken by another process, in one run (issue 27).

`make demo`'s command (the bundled ResNet-32 teacher, mcp at 0.1, data-aware Layer-Decomp, `--kd auto
--kd-budget 4m`, evaluation, export, latency) runs twice, each a fresh process: first alone, then while a
background process spins on one core (a pure-Python loop, as a CI neighbour's job would). Per run: the
wall clock, the seconds of every stage, how distillation spent its budget, and the accuracy.

    python benchmarks/bench_shared_cores.py --out benchmarks/results/shared_cores_cpu.json [--budget 4m]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import load_rows, save_row  # noqa: E402

TEACHER = ROOT / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"
SPIN = "while True: pass"


def demo(out: Path, budget: str) -> dict:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tnncompress.cli.app", "run", str(TEACHER), "--format", "mcp", "--rate",
                    "0.1", "--data", "fashion-mnist", "--kd", "auto", "--kd-budget", budget, "--out", str(out),
                    "--force", "-q"], check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    distillation = report.get("distillation") or {}
    return {"wall_s": round(wall, 1), "stages_s": {k: round(v, 1) for k, v in report["seconds"].items()},
            "distillation_s": distillation.get("seconds"),
            "phases": [[p["phase"], p["steps"], p.get("planned_steps")] for p in distillation.get("phases", [])],
            "top1_after": {s["stage"]: s.get("top1") for s in report["stages"]},  # on the curve's test samples
            "top1": report["accuracy"]["compressed"]["top1"], "threads": report.get("threads")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="4m")
    opts = parser.parse_args()
    doc = load_rows(opts.out)
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("idle", "one core taken"):
            spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if label != "idle" else None
            try:
                row = {"machine state": label, "budget": opts.budget, **demo(Path(tmp) / "demo", opts.budget)}
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
            print(json.dumps(row), flush=True)
            save_row(opts.out, doc, row)


if __name__ == "__main__":
    main()
