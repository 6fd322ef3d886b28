"""The recipe format: the files in recipes/ validate, and resolution follows its documented precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from tnncompress.errors import UsageError
from tnncompress.pipeline import Recipe, resolve
from tnncompress.pipeline.recipe import read_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_bundled_recipes_validate(path):
    values = read_recipe(path)
    values.setdefault("checkpoint", "model.pt")  # templates take these from the command line
    if values.get("kd", "none") != "none":
        values.setdefault("data", "cifar10:/data")
    Recipe(**values).check()


def test_precedence_defaults_recipe_options_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\ncheckpoint: a.pt\nformat: tt\nrate: 0.2\nseed: 3\n")
    r = resolve(str(recipe), {"rate": 0.1, "format": None}, ["seed=7", "include=[layer1.*, layer2.*]"])
    assert (r.checkpoint, r.format, r.rate, r.seed, r.rate_by) == ("a.pt", "tt", 0.1, 7, "params")
    assert r.include == ["layer1.*", "layer2.*"]


def test_round_trip_through_yaml(tmp_path):
    r = Recipe(checkpoint="m.pt", format="mtr", rate=0.05, include=["x.*"], latency_batches=[1, 8]).check()
    path = tmp_path / "recipe.yaml"
    path.write_text(r.to_yaml())
    assert Recipe(**read_recipe(path)) == r


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "a recipe is a YAML mapping"),
    ("rate: yes\n", "recipe key 'rate': expected float"),
    ("include: layer1\n", "recipe key 'include': expected list"),
    ("modes: 0\ncheckpoint: a.pt\nrate: 0.1\n", "modes must be at least 1"),
])
def test_invalid_recipes_name_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve(str(path), {}, [])
