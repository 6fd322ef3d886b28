"""The headline command on torchvision ResNet-50, and Layer-Decomp's speed on a shared machine (issue 27).

1. `tnncompress run resnet50.pt --format mcp --rate 0.05` exactly as a user types it (no data: Layer-Decomp,
   export with the ONNX check, latency), on a seeded random torchvision ResNet-50 state dict (no pretrained
   weights can be downloaded here; the work does not depend on the values): wall clock and seconds per
   stage, on an otherwise idle machine; first with an empty plan cache, then with the one it filled.
2. Why the same command once ran for over 20 minutes on one core while another job held the other: the
   Layer-Decomp of the layers matching --include (default `layer3.*`, 19 of ResNet-50's convolutions)
   with the machine idle (PyTorch's default threads, and OpenMP's passive waiting: OMP_WAIT_POLICY=PASSIVE),
   then with a background process spinning on one core: default threads, passive waiting, --threads 1.

    python benchmarks/bench_headline.py --out benchmarks/results/headline_resnet50_cpu.json [--skip-headline]

Each row is a fresh process, one at a time.
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

from benchmarks.bench_shared_cores import SPIN  # noqa: E402
from benchmarks.common import load_rows, save_row  # noqa: E402


def resnet50(path: Path) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def one_run(checkpoint: Path, out: Path, args: list[str], env: dict | None = None, spin: bool = False) -> dict:
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if spin else None
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tnncompress.cli.app", "run", str(checkpoint), *args, "--out", str(out),
                        "--force", "-q"], check=True, cwd=ROOT, env={**os.environ, **(env or {})})
        wall = time.perf_counter() - started
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": round(wall, 1), "stages_s": {k: round(v, 1) for k, v in report["seconds"].items()},
            "cpu_s": {k: round(v, 1) for k, v in report["cpu_seconds"].items()}, "threads": report.get("threads"),
            "layers_compressed": report["layers_compressed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--include", default="layer3.*")
    parser.add_argument("--skip-headline", action="store_true")
    parser.add_argument("--skip-threads", action="store_true")
    parser.add_argument("--only", help="run only the rows whose label contains this text")
    opts = parser.parse_args()
    doc = load_rows(opts.out)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = resnet50(Path(tmp) / "resnet50.pt")
        # cold: an empty plan cache (measured plans and deployment-form timings); warm: the cache it filled
        cache = {"TNNCOMPRESS_PLAN_CACHE": str(Path(tmp) / "plans.json")}
        headline = ["--format", "mcp", "--rate", "0.05"]
        runs = [] if opts.skip_headline else [("headline, idle, cold cache", headline, cache, False),
                                              ("headline, idle, warm cache", headline, cache, False)]
        study = ["--format", "mcp", "--rate", "0.05", "--include", opts.include, "--no-onnx", "--no-latency"]
        if not opts.skip_threads:
            runs += [("Layer-Decomp of " + opts.include + ", idle", study, {}, False),
                     ("... idle, OMP_WAIT_POLICY=PASSIVE", study, {"OMP_WAIT_POLICY": "PASSIVE"}, False),
                     ("... one core taken", study, {}, True),
                     ("... one core taken, OMP_WAIT_POLICY=PASSIVE", study, {"OMP_WAIT_POLICY": "PASSIVE"}, True),
                     ("... one core taken, --threads 1", [*study, "--threads", "1"], {}, True)]
        for label, args, env, spin in runs:
            if opts.only and opts.only not in label:
                continue
            row = {"run": label, "args": " ".join(args), **one_run(checkpoint, Path(tmp) / "out", args, env, spin)}
            print(json.dumps(row), flush=True)
            save_row(opts.out, doc, row)


if __name__ == "__main__":
    main()
