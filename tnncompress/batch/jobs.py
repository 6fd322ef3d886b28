"""The runs of a batch: recipe files, folders of them, and sweeps over their keys, each resolved and checked
before the first run starts, so a typo in the tenth recipe fails in a second, not after nine runs."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TnncompressError, UsageError, brief
from ..io import parse_yaml
from ..pipeline.recipe import OPTIONS, Recipe, parse_overrides, read_recipe
from ..report.gates import GatesConfig

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Job:
    name: str  # also the name of its output directory
    source: str  # the recipe file it comes from
    sweep: dict[str, object]  # the swept values it sets ({} outside a sweep)
    recipe: Recipe  # resolved and checked, with `out` inside the batch's output directory


def recipe_files(paths: list[str | Path]) -> list[Path]:
    """Each path a recipe file, or a folder whose *.yaml / *.yml files are taken in name order."""
    if not paths:
        raise UsageError("no recipes: give recipe files or folders of them")
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in RECIPE_SUFFIXES and p.is_file())
            if not found:
                patterns = ", ".join("*" + s for s in RECIPE_SUFFIXES)
                raise UsageError(f"{path}: no recipe files ({patterns}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such recipe file or folder")
    return files


def parse_sweeps(items: list[str]) -> dict[str, list[object]]:
    """`--sweep KEY=V1,V2` items -> {dotted key: [values]}; a key must be a recipe key, values are YAML."""
    sweeps: dict[str, list[object]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UsageError(f"--sweep {brief(item)}: expected KEY=VALUE1,VALUE2,...")
        option = OPTIONS.lookup(key)
        if option is None:
            known = ", ".join(o.flat for o in OPTIONS.options)
            raise UsageError(f"--sweep {brief(key)}: not a recipe key (known: {known})")
        raw = [parse_yaml(v, f"--sweep {key}") if v.strip() else None for v in text.split(",")]
        # each value checked against the option's type here (a sweep value is an option value like any other)
        sweeps[option.dotted] = [OPTIONS.flatten({option.dotted: v}, f"--sweep {key}")[option.dotted] for v in raw]
    return sweeps


def parse_gates(items: list[str]) -> dict[str, object]:
    """`--gate NAME=VALUE` items -> {gates.NAME: value}; NAME is one of GatesConfig's options."""
    names = [o.name for o in GatesConfig.OPTIONS]
    pairs = []
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name.strip() not in names:
            raise UsageError(f"--gate {brief(item)}: expected NAME=VALUE with NAME one of {', '.join(names)}")
        pairs.append(f"gates.{name.strip()}={text.strip()}")
    return parse_overrides(pairs)


def collect(paths: list[str | Path], out_root: Path, sweeps: list[str] = (), gates: list[str] = (),
            overrides: list[str] = ()) -> list[Job]:
    """Every run of the batch, resolved: recipe < sweep values < --gate < --set."""
    files = recipe_files(paths)
    swept = parse_sweeps(list(sweeps))
    extra = parse_gates(list(gates)) | parse_overrides(list(overrides))
    combos = [dict(zip(swept, values, strict=True)) for values in itertools.product(*swept.values())]
    jobs: list[Job] = []
    for file in files:
        base = _read(file)
        for combo in combos:
            name = _name(file, combo)
            values = base | combo | extra | {"out": str(out_root / name)}
            try:
                recipe = Recipe.from_values(values).check()
            except TnncompressError as exc:
                where = f"{file}" + (f" with {_words(combo)}" if combo else "")
                raise UsageError(f"{where}: {exc}") from None
            jobs.append(Job(name, str(file), combo, recipe))
    seen: dict[str, str] = {}
    for job in jobs:
        check_name(job.name, job.source)
        key = job.name.casefold()  # a case-insensitive file system would make A and a one directory
        if key in seen:
            raise UsageError(f"{job.source} and {seen[key]} would both write {out_root / job.name}: give the "
                             "recipe files different names")
        seen[key] = job.source
    return jobs


# What sits next to the runs' directories in the batch's output: a run must not be named like them.
RESERVED = ("summary.json", "summary.md", "junit.xml", "summary.html")


def check_name(name: str, source: str) -> None:
    """A run's name is a directory inside the batch's output: refuse `.` and `..` (the output itself, or
    its parent), hidden names (a run's staging `.NAME.partial`, lock and previous result are hidden, so
    a run named `.a.partial` would be another run's staging), and the summaries' file names."""
    if name in (".", "..") or name.startswith(".") or name.casefold() in RESERVED or not name:
        raise UsageError(f"{source}: the run would be named {brief(name)}, which cannot be a run's directory "
                         "(names come from recipe file names: rename the file so that it does not start with a "
                         f"dot and is not one of {', '.join(RESERVED)})")


def _read(file: Path) -> dict[str, object]:
    try:
        return read_recipe(file)
    except TnncompressError as exc:
        message = str(exc)
        raise UsageError(message if str(file) in message else f"{file}: {message}") from None


def _name(file: Path, combo: dict[str, object]) -> str:
    """The recipe's file name without suffix, and the swept values: `resnet32_format-cp_rate-0.1`."""
    parts = [file.stem] + [f"{OPTIONS.lookup(k).flat}-{v}" for k, v in combo.items()]
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(parts))


def _words(combo: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in combo.items())
