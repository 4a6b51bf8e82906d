"""The environment files in envs/ agree with pyproject.toml, and the CLI is installed."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _requirements(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", line.strip())
        if match:
            parsed[match[1].lower()] = match[2].replace(" ", "")
    return parsed


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [d for group in project["optional-dependencies"].values() for d in group]
    return _requirements(project["dependencies"] + extras)


def _env(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict) and "pip" in item)
    assert "-e .." in pip, f"{path.name} must install the project itself"
    return _requirements([line for line in pip if not line.startswith("-")])


ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_pins_match_pyproject(path):
    declared = _pyproject()
    for name, spec in _env(path).items():
        assert name in declared, f"{path.name}: {name} is not a dependency in pyproject.toml"
        assert spec == declared[name], f"{path.name}: {name}{spec} but pyproject.toml says {name}{declared[name]}"


def test_every_dependency_is_in_some_env_file():
    covered = set().union(*(_env(path) for path in ENV_FILES))
    missing = set(_pyproject()) - covered - {"pytest"}
    assert not missing, f"dependencies missing from every envs/*.yaml: {sorted(missing)}"


def test_every_rule_names_an_existing_env_file():
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    named = set(re.findall(r'conda:\s*\n\s*"\.\./\.\./envs/([a-z]+\.yaml)"', rules))
    assert named and named <= {p.name for p in ENV_FILES}


def test_cli_lists_the_workflow_subcommands():
    out = subprocess.run([sys.executable, "-m", "midiffusion.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("phantom", "preprocess", "train", "translate", "baseline", "nnunet-train", "evaluate", "tables"):
        assert command in out.stdout
