"""Fixed costs of a run (issue 27): the same `tnncompress run` with an empty plan cache (cold), again with
the cache the first run filled (warm), and with the cache off; wall clock per stage from each report.
Then the plan measurement alone: in two fresh processes sharing a cache file, the first and second
forward pass (batch 256) of the teacher compressed with `mcp` at 0.1, every layer planned by "measure".

    python benchmarks/bench_fixed_costs.py --out benchmarks/results/fixed_costs_cpu.json \
        [--args "-f mcp -r 0.1 -d fashion-mnist --kd none"]

Each run is a fresh process (as a user's is), one after the other on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import load_rows, save_row  # noqa: E402

TEACHER = ROOT / "tnncompress/models/checkpoints/resnet32_fashion_mnist.safetensors"


def one_run(args: list[str], out: Path, cache: str) -> dict:
    env = {**os.environ, "TNNCOMPRESS_PLAN_CACHE": cache}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tnncompress.cli.app", "run", str(TEACHER), *args, "--out", str(out),
                    "--force", "-q"], env=env, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(wall, 1), "stages_s": {k: round(v, 1) for k, v in report["seconds"].items()},
            "top1": report["accuracy"]["compressed"]["top1"] if report["accuracy"].get("compressed") else None,
            "threads": report.get("threads")}


def forward_probe() -> dict:
    """Seconds of the first and second "measure"-planned forward of the mcp 0.1 student, in this process."""
    import torch

    from tnncompress.compress import compress_model
    from tnncompress.compress import stage as compress_stage
    from tnncompress.formats import planned
    from tnncompress.pipeline import Recipe, stages
    from tnncompress.train import Context

    recipe = Recipe.of(checkpoint=str(TEACHER), format="mcp", rate=0.1).check()
    loaded, _, _ = stages.load(recipe, None)
    _, plans = compress_stage.plan(recipe.compress, loaded.model, loaded.input_size, None, Context(), [1])
    student, _ = compress_model(loaded.model, plans, seed=0)
    x, seconds = torch.randn(256, *loaded.input_size), []
    for _ in range(2):
        started = time.perf_counter()
        with planned(student, "measure"), torch.no_grad():
            student(x)
        seconds.append(round(time.perf_counter() - started, 2))
    return {"first_forward_s": seconds[0], "second_forward_s": seconds[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--args", default="-f mcp -r 0.1 -d fashion-mnist --kd none")
    parser.add_argument("--probe", action="store_true", help="(internal) print forward_probe() as JSON")
    parser.add_argument("--skip-runs", action="store_true", help="only the forward probe")
    opts = parser.parse_args()
    if opts.probe:
        print(json.dumps(forward_probe()))
        return
    args = shlex.split(opts.args)
    doc = load_rows(opts.out)
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "plans.json")
        for label, where in (() if opts.skip_runs else
                             (("cold cache", cache), ("warm cache", cache), ("cache off", "off"))):
            row = {"run": label, "args": opts.args, **one_run(args, Path(tmp) / label.replace(" ", "-"), where)}
            print(json.dumps(row), flush=True)
            save_row(opts.out, doc, row)
        probe_cache = str(Path(tmp) / "probe-plans.json")
        for label in ("forward probe, cold cache", "forward probe, warm cache"):
            got = subprocess.run([sys.executable, __file__, "--out", str(opts.out), "--probe"], check=True,
                                 capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "TNNCOMPRESS_PLAN_CACHE": probe_cache})
            row = {"run": label, **json.loads(got.stdout.strip().splitlines()[-1])}
            print(json.dumps(row), flush=True)
            save_row(opts.out, doc, row)


if __name__ == "__main__":
    main()
