"""Golden outputs of the recipes in recipes/: what `tnncompress run` wrote for each, summarised, so that a
refactoring can show it changes nothing. `python -m tests.pipeline.golden` regenerates
`expected_outputs.json` (do that only for a deliberate change of results, and say so in the commit).
The data-aware recipes are sensitive to BLAS summation order at about 1e-3 (float32 moments, then CG and
factors with a scale freedom): the stored runs are those of torch 2.14.1 on 1 thread (2 until the suite ran
one pytest-xdist worker per core, where two threads per golden run fought the other worker; regenerated
2026-12-07 for issue 27's data-aware fit (moments from shifted correlations, CG stopped by its progress)
and distillation planned by "rebuild", the dense kernel: no timing, and 4x quicker than FLOP-optimal
chains on these small layers; and again for CP-ALS by a dimension tree with Cholesky solves, the same
iterates to 10 digits, which the data-aware fit moves by about 1e-4); between 1 and 2 threads the mcp
recipe differs by up to 9e-3 in a factor's projections).

Each recipe runs as written, with overrides that make it fast and self-contained: a short distillation
budget, a small calibration pool, small evaluations, no latency or ONNX (neither changes the weights),
the bundled data, and a checkpoint where a recipe is a template without one (for ResNet-50, a seeded
random state dict whose first stage alone is compressed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
EXPECTED = Path(__file__).with_name("expected_outputs.json")
SMALL_CNN = ROOT / "tnncompress" / "models" / "checkpoints" / "small_cnn_fashion_mnist.safetensors"
BUNDLED = ROOT / "tnncompress" / "data" / "bundled" / "fashion-mnist"
FAST = {"latency": False, "onnx": False, "eval_limit": 200, "kd_eval_limit": 100, "kd_plan": "rebuild",
        "eval_plan": "rebuild", "device": "cpu", "workers": 0, "calib_samples": 256,
        "threads": 1}  # as stored: one thread, the same sums on any machine, and no oversubscription
# when `make test` runs a pytest-xdist worker per core
OVERRIDES = {
    "resnet32-fashion-mnist-mcp": {},
    "resnet32-fashion-mnist-mcp-seqkd": {"kd_steps": 31, "kd_epochs": None},
    # a wall-clock budget is not reproducible: a step budget stands in for it
    "resnet32-fashion-mnist-mcp-auto": {"kd_steps": 40, "kd_budget": None},
    "torchrun-e2e-kl": {"checkpoint": "SMALL_CNN", "data": "fashion-mnist", "kd_steps": 6, "kd_epochs": None,
                        "kd_batch_size": 32},
    "torchvision-resnet50-mcp": {"checkpoint": "RESNET50", "include": ["layer1.*"]},
}


def random_resnet50(path: Path) -> Path:
    """A ResNet-50 state dict from a seeded generator (not torchvision's init, which may change)."""
    import torchvision

    g = torch.Generator().manual_seed(0)
    state = {}
    for name, t in torchvision.models.resnet50(num_classes=10).state_dict().items():
        if name.endswith("running_var"):
            state[name] = torch.ones_like(t)
        elif t.is_floating_point():
            state[name] = 0.05 * torch.randn(t.shape, generator=g)
        else:
            state[name] = t
    torch.save(state, path)
    return path


def recipe_values(name: str, workdir: Path) -> dict:
    """The recipe's values as {dotted name: value}, with the overrides applied."""
    from tnncompress.pipeline.recipe import mapping_values

    values = mapping_values(yaml.safe_load((RECIPES / f"{name}.yaml").read_text()), name)
    overrides = mapping_values({**FAST, **OVERRIDES[name], "out": str(workdir / name)}, "overrides")
    values.update(overrides)
    checkpoint = values.get("model.checkpoint")
    if checkpoint == "SMALL_CNN":
        values["model.checkpoint"] = str(SMALL_CNN)
    elif checkpoint == "RESNET50":
        values["model.checkpoint"] = str(random_resnet50(workdir / "resnet50.pt"))
    else:
        values["model.checkpoint"] = str(ROOT / checkpoint)
    return values


def summarise(directory: Path) -> dict:
    """The layers' structure exactly, and per tensor its shape, norm and two fixed random projections."""
    structure = json.loads((directory / "structure.json").read_text())
    layers = [{k: r[k] for k in ("name", "format", "ranks", "tensorization", "shape", "stride", "padding")}
              for r in structure["layers"]]
    tensors = {}
    for name, t in sorted(load_file(directory / "model.safetensors").items()):
        flat = t.double().flatten()
        g = torch.Generator().manual_seed(len(name))
        probes = torch.randn(2, flat.numel(), generator=g, dtype=torch.float64)
        tensors[name] = {"shape": list(t.shape), "norm": float(flat.norm()),
                         "projections": [float(v) for v in probes @ flat]}
    return {"arch": structure["arch"], "layers": layers, "tensors": tensors}


def run_recipe(name: str, workdir: Path) -> dict:
    from tnncompress.pipeline import Recipe, run

    os.environ["TNNCOMPRESS_DATA"] = str(BUNDLED)
    result = run(Recipe.from_values(recipe_values(name, workdir)).check())
    return summarise(result.directory)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        expected = {name: run_recipe(name, Path(tmp)) for name in OVERRIDES}
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {EXPECTED} ({len(expected)} recipes)", file=sys.stderr)
