"""The recipe format: the files in recipes/ validate, version 1 (flat) and version 2 (by section) both
read, and resolution follows its documented precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tnncompress.errors import UsageError
from tnncompress.pipeline import Recipe, read_recipe, resolve
from tnncompress.pipeline.recipe import mapping_values

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("**/*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_bundled_recipes_validate(path):
    values = read_recipe(path)
    values.setdefault("model.checkpoint", "model.pt")  # templates take these from the command line
    if values.get("distill.algorithm", "none") != "none":
        values.setdefault("data.spec", "cifar10:/data")
    Recipe.from_values(values).check()


def test_precedence_defaults_recipe_options_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 2\nmodel: {checkpoint: a.pt}\ncompress: {format: tt, rate: 0.2}\nseed: 3\n")
    r = resolve(str(recipe), {"rate": 0.1}, ["seed=7", "include=[layer1.*, layer2.*]", "distill.lr=0.01"])
    assert (r.model.checkpoint, r.compress.format, r.compress.rate, r.seed, r.compress.rate_by) == \
        ("a.pt", "tt", 0.1, 7, "params")
    assert r.compress.include == ["layer1.*", "layer2.*"] and r.distill.lr == 0.01


def test_a_version_1_recipe_reads_as_it_did():
    flat = {"version": 1, "checkpoint": "a.pt", "format": "mtt", "rate": 0.1, "data": "fashion-mnist", "kd": "seq",
            "kd_steps": 600, "kd_lr": 0.01, "kd_decay_at": [0.5], "eval_limit": 100, "latency_batches": [1]}
    text = yaml.safe_dump(flat)
    r = Recipe.from_values(mapping_values(yaml.safe_load(text), "v1")).check()
    assert (r.compress.format, r.distill.algorithm, r.distill.steps, r.distill.lr, r.distill.decay_at) == \
        ("mtt", "seq", 600, 0.01, [0.5])
    assert (r.data.spec, r.evaluate.limit, r.report.latency_batches) == ("fashion-mnist", 100, [1])


def test_round_trip_through_yaml(tmp_path):
    r = Recipe.of(checkpoint="m.pt", format="mtr", rate=0.05, include=["x.*"], latency_batches=[1, 8]).check()
    path = tmp_path / "recipe.yaml"
    path.write_text(r.to_yaml())
    doc = yaml.safe_load(path.read_text())
    assert doc["version"] == 2 and doc["compress"]["format"] == "mtr" and doc["report"]["latency_batches"] == [1, 8]
    assert Recipe.from_values(read_recipe(path)) == r


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "a recipe is a YAML mapping"),
    ("rate: yes\n", "rate: expected float | None, got True"),
    ("include: layer1\n", "include: expected list[str], got 'layer1'"),
    ("compress: {modes: 0}\nmodel: {checkpoint: a.pt}\nrate: 0.1\n", "modes must be at least 1"),
    ("compress: {nonsense: 1}\n", "unknown key compress.nonsense"),
    ("version: 3\n", "recipe version 3"),
])
def test_invalid_recipes_name_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve(str(path), {}, [])
