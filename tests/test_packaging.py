"""The project's shape: packaging lists every subpackage, README's commands are what CI runs,
the Dockerfile installs the package with `tnncompress` as its entrypoint."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from the dev extra
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_packaged():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "tnncompress").rglob("__init__.py")}
    assert found - listed == set()
    assert config["project"]["scripts"]["tnncompress"] == "tnncompress.cli.app:main"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]
    assert commands[:2] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_dockerfile_installs_and_names_the_entrypoint():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    instructions = [line.split()[0] for line in lines]
    assert instructions[0] == "FROM"
    assert set(instructions) <= {"FROM", "WORKDIR", "COPY", "RUN", "ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL"}
    assert any(line.startswith("RUN pip install") and " ." in line for line in lines)
    entry = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert json.loads(entry[len("ENTRYPOINT"):]) == ["tnncompress"]
    for copied in (line.split()[1] for line in lines if line.startswith("COPY")):
        assert (ROOT / copied).exists(), copied
