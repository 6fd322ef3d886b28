"""One registry type for formats, models, dataset kinds, decomposers and path strategies: lookups that fail
say what was meant, listings filter, and every user-facing name check speaks the same way."""

from __future__ import annotations

import pytest
import torch
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.data import DATASETS, parse_spec
from tnncompress.decompose import DECOMPOSERS, get_decomposer
from tnncompress.einsum import PATH_STRATEGIES, conv_einsum
from tnncompress.errors import UsageError
from tnncompress.formats import FORMATS, get_format, list_formats
from tnncompress.models import MODELS, create_model
from tnncompress.registry import Registry, UnknownNameError


def test_get_add_remove_and_the_order():
    r: Registry[int] = Registry("thing", order=lambda name, value: -value)
    r.add("one", 1)
    r.register("three")(3)
    r.add("two", 2)
    assert r.get("two") == 2 and "three" in r and "four" not in r and len(r) == 3
    assert r.names() == ["three", "two", "one"] == list(r)  # by `order`, not by registration
    assert r.names(lambda v: v % 2 == 1) == ["three", "one"] and r.entries(lambda v: v > 1) == [3, 2]
    with pytest.raises(ValueError, match="thing 'one' registered twice"):
        r.add("one", 11)
    assert r.remove("one") == 1 and r.names() == ["three", "two"]


def test_an_unknown_name_is_a_usage_error_and_a_key_error_that_says_what_was_meant():
    r: Registry[str] = Registry("colour")
    for name in ("red", "green", "blue"):
        r.add(name, name.upper())
    with pytest.raises(UnknownNameError) as info:
        r.get("gren")
    assert isinstance(info.value, UsageError) and isinstance(info.value, KeyError) and info.value.exit_code == 2
    assert str(info.value) == "unknown colour 'gren'; did you mean 'green' or 'red'? (known: red, green, blue)"
    assert "did you mean" not in r.unknown("xyz")  # nothing near: no guess
    with pytest.raises(UnknownNameError):
        r.get(["not", "hashable"])
    many: Registry[int] = Registry("number")
    for k in range(40):
        many.add(f"n{k}", k)
    assert many.unknown("m").endswith("n29, ... (40 in all))")


def test_every_registry_is_the_one_type_and_suggests():
    for registry in (FORMATS, MODELS, DATASETS, DECOMPOSERS, PATH_STRATEGIES):
        assert isinstance(registry, Registry) and len(registry) >= 2
    assert list_formats() == FORMATS.names() and FORMATS.names(lambda f: f.reshaped) == ["mcp", "mtk", "mtt", "mtr"]
    with pytest.raises(KeyError, match="did you mean 'mcp'"):
        get_format("mpc")
    with pytest.raises(UsageError, match="did you mean 'tensorly'"):
        get_decomposer("tensorli")
    with pytest.raises(UsageError, match=r"unknown dataset; did you mean 'fashion-mnist'\? \(known: .*cifar10:DIR"):
        parse_spec("fashion_mnist")
    with pytest.raises(ValueError, match="did you mean 'optimal'"):
        conv_einsum("ab,bc->ac", torch.ones(2, 2), torch.ones(2, 2), optimize="optimall")


def test_the_command_line_suggests_the_nearest_choice(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.pt"), "-f", "mtt2", "-r", "0.1"])
    assert result.exit_code == 2 and "did you mean 'mtt'" in result.output
    torch.save(create_model("small_cnn").state_dict(), tmp_path / "m.pt")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "m.pt"), "--arch", "tnncompress:resnet23", "-r", "0.1"])
    assert result.exit_code == 2 and "did you mean 'resnet32'" in result.output
