"""Every declared option is reachable from the command line, a recipe (nested and flat) and --set, is
listed by --help, and appears in the README's generated table: one declaration, every surface."""

from __future__ import annotations

import importlib
import sys
import typing
from pathlib import Path

import pytest
import yaml
from tnncompress.cli.app import app
from typer.testing import CliRunner

from tnncompress.errors import UsageError
from tnncompress.options import OptionSet, Section, option
from tnncompress.pipeline import OPTIONS, resolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import options_table  # noqa: E402

runner = CliRunner()
SPECS = OPTIONS.options
cli_run = importlib.import_module("tnncompress.cli.run_cmd")


# strings with a syntax of their own
FORMATTED = {"kd_budget": "90s", "cache_memory": "2G", "spectral": "clip:2", "gate_min_speedup": "1.5@pytorch_cpu:1"}
# options that only mean something with others set: {flat name: {other option: value}}
NEEDS = {**{flat: {"data": "fashion-mnist"} for flat in ("kd", "bqn_bits", "gate_max_accuracy_drop")},
         **{flat: {"data": "fashion-mnist", "bqn_bits": 2} for flat in ("bqn_act_bits", "bqn_exclude",
                                                                         "bqn_train_float")},
         "quantize": {"data": "fashion-mnist"},
         **{flat: {"data": "fashion-mnist", "quantize": "int8"}
            for flat in ("gate_max_int8_accuracy_drop", "gate_max_int8_size_ratio")}}


def _sample(spec):
    """A valid value of the option that is not its default."""
    o, hint = spec, spec.hint
    if spec.flat in FORMATTED:
        return FORMATTED[spec.flat]
    union = typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType"
    t = next(a for a in typing.get_args(hint) if a is not type(None)) if union else hint
    if o.choices:
        return next(c for c in o.choices if c != spec.default)
    if t is bool:
        return not spec.default
    if typing.get_origin(t) is list:
        item = typing.get_args(t)[0]
        return {float: [0.3], int: [3], str: ["layer*"]}[item]
    if t is int:
        return max(int(o.minimum or 0), 0) + (3 if spec.default != 3 else 4)
    if t is float:
        low = o.minimum if o.minimum is not None else (o.above if o.above is not None else 0)
        high = o.maximum if o.maximum is not None else (o.below if o.below is not None else low + 10)
        return round(low + (high - low) * 0.3, 3) + (1.5 if spec.flat == "kd_explode_factor" else 0)
    return "cpu" if spec.flat == "device" else f"value-{spec.flat}"


def _cli_args(spec, value) -> list[str]:
    if spec.argument:
        return [str(value)]
    if isinstance(value, bool):
        return [spec.flag if value else f"--no-{spec.flag[2:]}"]
    if isinstance(value, list):
        return [a for v in value for a in (spec.flag, str(v))]
    return [spec.flag, str(value)]


@pytest.fixture
def captured(monkeypatch):
    """The recipe `tnncompress run` resolves, captured instead of run."""
    seen = []

    def fake_run(recipe, force=False, resume=False):
        seen.append(recipe)
        raise SystemExit(0)

    monkeypatch.setattr(cli_run, "run_pipeline", fake_run)
    return seen


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.dotted)
def test_every_option_reaches_the_recipe_from_every_surface(spec, captured, tmp_path):
    value = _sample(spec)
    assert value != spec.default
    # the command line
    base = [] if spec.argument else ["model.pt"]
    extra = ["--rate", "0.1"] if spec.flat != "rate" else []
    extra += [a for k, v in NEEDS.get(spec.flat, {}).items() for a in (f"--{k.replace('_', '-')}", str(v))]
    result = runner.invoke(app, ["run", *base, *extra, *_cli_args(spec, value)])
    assert result.exit_code == 0, result.output
    assert captured[-1].values()[spec.dotted] == value
    # a recipe, by section and as a flat (version 1) key
    for doc in ({spec.section: {spec.name: value}} if spec.section else {spec.name: value}, {spec.flat: value}):
        recipe_file = tmp_path / "r.yaml"
        recipe_file.write_text(yaml.safe_dump({"version": 2, **doc}))
        given = {"checkpoint": "model.pt"} if spec.flat != "checkpoint" else {}
        given |= {"rate": 0.1} if spec.flat != "rate" else {}
        given |= NEEDS.get(spec.flat, {})
        assert resolve(str(recipe_file), given, []).values()[spec.dotted] == value
    # --set, dotted and flat
    for key in (spec.dotted, spec.flat):
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        overrides = [f"{key}={text}"] + [f"{k}={v}" for k, v in NEEDS.get(spec.flat, {}).items()]
        checkpoint = {} if spec.flat == "checkpoint" else {"checkpoint": "model.pt"}
        recipe = resolve(None, {**checkpoint, **({"rate": 0.1} if spec.flat != "rate" else {})}, overrides)
        assert recipe.values()[spec.dotted] == value, key


def test_help_and_readme_list_every_option():
    help_text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250"}).output
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for spec in SPECS:
        if not spec.argument:
            assert spec.flag in help_text, spec.flag
        assert f"`{spec.dotted}` (`{spec.flat}`)" in readme, spec.dotted
    assert options_table.updated(readme) == readme  # the table is the generated one, not an edited copy


def test_constraints_are_enforced_by_the_declaration():
    class Toy(Section, name="toy", title="Toy", prefix="toy_"):
        size: int = option(2, "A size.", minimum=1)
        share: float = option(0.5, "A share.", above=0, below=1)
        kind: str = option("a", "A kind.", choices=("a", "b"))

    toys = OptionSet([Toy])
    assert [o.flat for o in toys.options] == ["toy_size", "toy_share", "toy_kind"]
    built = toys.build(toys.flatten({"toy": {"size": 3}, "toy_kind": "b"}, "t"), Toy).check()
    assert (built.size, built.share, built.kind) == (3, 0.5, "b")
    for bad, message in (({"toy_size": 0}, "toy_size must be at least 1"), ({"toy_share": 1.0}, "less than 1"),
                         ({"toy_kind": "c"}, "use one of a, b"), ({"toy_size": "x"}, "expected int")):
        with pytest.raises(UsageError, match=message):
            toys.build(toys.flatten(bad, "t"), Toy).check()

    class Copy(Section, name="copy", prefix="toy_"):  # the same flat names as Toy's
        size: int = option(2, "A size.")

    with pytest.raises(ValueError, match="declared twice"):
        OptionSet([Toy, Copy])
