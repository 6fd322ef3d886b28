"""`tnncompress run` on the recipes in recipes/ writes what it wrote before the options and results were
restructured (issue 11): the same layers, formats and ranks exactly, and the same weights to float
tolerance (the stored summaries come from a run of the code before the change; see golden.py)."""

from __future__ import annotations

import json
import math

import pytest

from .golden import EXPECTED, OVERRIDES, run_recipe

EXPECTED_OUTPUTS = json.loads(EXPECTED.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_recipe_outputs_match_the_stored_run(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TNNCOMPRESS_DATA", "")  # restored by monkeypatch; run_recipe sets the bundled data
    got, want = run_recipe(name, tmp_path), EXPECTED_OUTPUTS[name]
    assert got["arch"] == want["arch"] and got["layers"] == want["layers"]
    assert got["tensors"].keys() == want["tensors"].keys()
    for key, g in got["tensors"].items():
        w = want["tensors"][key]
        assert g["shape"] == w["shape"], key
        tolerance = 1e-4 * w["norm"] + 1e-9  # Layer-Decomp is iterative: BLAS order moves the last digits
        assert math.isclose(g["norm"], w["norm"], rel_tol=1e-4, abs_tol=1e-9), key
        assert all(abs(a - b) <= tolerance for a, b in zip(g["projections"], w["projections"], strict=True)), key
