"""What every `run` output must satisfy, checked against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tnncompress import load
from tnncompress.export import INPUT, OUTPUT, session
from tnncompress.formats import KernelShape, Tensorization, get_format

FILES = ("model.safetensors", "structure.json", "model.onnx", "report.json", "report.md", "report.html",
         "recipe.yaml", "manifest.json")


def check_output(directory: Path, model: torch.nn.Module, input_size, rate: float) -> dict:
    assert sorted(p.name for p in directory.iterdir()) == sorted(FILES)
    report = json.loads((directory / "report.json").read_text())
    structure = json.loads((directory / "structure.json").read_text())

    # load(form="factors") rebuilds exactly the model the run produced; load() is it in its recorded
    # load form (dense kernels or frozen chains): the same function to float tolerance
    x = torch.randn(3, *input_size, generator=torch.Generator().manual_seed(1))
    rebuilt = load(directory, form="factors")
    with torch.no_grad():
        want = model.eval()(x)
        assert torch.equal(rebuilt(x), want)
        torch.testing.assert_close(load(directory)(x), want, rtol=1e-4, atol=1e-4)

    # onnxruntime, run here, independently of the run's own check
    got = session((directory / "model.onnx").read_bytes()).run([OUTPUT], {INPUT: x.numpy()})[0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-4)
    ops = report["onnx"]["operators"]
    assert not any("::" in op for op in ops) and "Einsum" not in ops  # plain operators, no weight einsums

    # parameter counts: from the saved tensors, not from the report's own arithmetic
    saved = sum(p.numel() for p in rebuilt.parameters())
    assert report["params"]["compressed"] == saved
    done = [r for r in report["layers"] if r["status"] == "compressed"]
    assert done and len(done) == len(structure["layers"])
    for row in done:
        assert row["params_compressed"] <= rate * row["params_original"]
        layer = rebuilt.get_submodule(row["name"])
        assert row["params_compressed"] == sum(p.numel() for p in layer.parameters())
        assert 0 <= row["rel_error"] <= 1.0 + 1e-9
        _check_ranks_are_largest(row, next(s for s in structure["layers"] if s["name"] == row["name"]), rate)
    rate_seen = report["params"]["compressible_compressed"] / report["params"]["compressible_original"]
    assert rate_seen == pytest.approx(report["params"]["compressible_rate"], rel=1e-12)
    assert rate_seen <= rate
    return report


def _check_ranks_are_largest(row: dict, record: dict, rate: float) -> None:
    """No single rank can grow by one within the layer's budget (unless it is at its cap): the ranks
    are the largest that meet the rate."""
    fmt = get_format(row["format"])
    shape = KernelShape(**record["shape"])
    tz = record["tensorization"]
    tz = Tensorization(tuple(tz["out_modes"]), tuple(tz["in_modes"])) if tz else None
    bias = shape.out_channels if record["bias"] else 0
    budget = int(rate * row["params_original"]) - bias
    for name, r in row["ranks"].items():
        bigger = {**row["ranks"], name: r + 1}
        if fmt.effective_ranks(shape, tz, bigger) == bigger:  # not at its cap
            assert fmt.params(shape, tz, bigger) > budget, (row["name"], name)
