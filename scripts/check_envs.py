"""Build each envs/*.yaml as a clean venv from its pip lines and run its rules on the ci configuration's
inputs: the stand-in for `snakemake --sdm conda` where conda's channels are out of reach (envs/README.md
says where the two can differ). Writes results/benchmarks/envs.json: per env, what it installs, its install
seconds, and each rule's result.

    .venv/bin/python scripts/check_envs.py [--work /tmp/midiffusion-envs] [--envs data report]

First the whole ci workflow (with `real_contrast` and `supervised_bound`) runs once with this interpreter's
Snakemake, for every rule's inputs. Then, per env, each of its rules is forced to run again by a Snakemake
whose PATH holds that env's bin and no other Python environment.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
# How an env file installs this checkout: `..` would be .snakemake/, where conda runs pip (envs/README.md).
EDITABLE = re.compile(r"-e \$\{MIDIFFUSION_ROOT\}\[([a-z,]+)\]")
RULE = re.compile(r"(?P<indent> *)(?:rule|checkpoint)(?: (?P<name>\w+))?:")


@dataclass(frozen=True)
class Rule:
    name: str  # a template such as "nnunet_predict_{segmenter}" for a rule made in a loop
    env: Path | None
    shell: str


def pip_lines(env_file: Path) -> list[str]:
    spec = yaml.safe_load(env_file.read_text())
    return next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict) and "pip" in item)


def project_extras(env_file: Path) -> list[str]:
    """The extras the env file installs this project with; ValueError unless it installs it once, as EDITABLE."""
    editable = [EDITABLE.fullmatch(line) for line in pip_lines(env_file) if line.startswith("-e")]
    if len(editable) != 1 or not editable[0]:
        raise ValueError(f"{env_file.name} must install the project once, as -e ${{MIDIFFUSION_ROOT}}[<extras>]")
    return editable[0][1].split(",")


def extra_requirements(extras: list[str]) -> list[str]:
    """The core dependencies and those of the extras, an extra that names others ([all]) expanded."""
    lines = list(PROJECT["dependencies"])
    for extra in extras:
        for line in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(line)
            is_project = canonicalize_name(requirement.name) == canonicalize_name(PROJECT["name"])
            lines += extra_requirements(sorted(requirement.extras)) if is_project else [line]
    return lines


def installed_distributions(env_file: Path) -> set[str]:
    """Canonical names of what the env installs itself: its pip lines, this project and its extras."""
    lines = [line for line in pip_lines(env_file) if not line.startswith("-")]
    lines += extra_requirements(project_extras(env_file))
    return {canonicalize_name(Requirement(line).name) for line in lines} | {PROJECT["name"]}


def _block(lines: list[str], start: int, indent: int) -> list[str]:
    """The lines after lines[start] that are indented deeper than `indent` (blank lines included)."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    return lines[start + 1:end]


def _directive(body: list[str], key: str) -> str | None:
    """The Python literal of a rule's `key:` directive (a path, the shell string), or None."""
    for i, line in enumerate(body):
        if line.strip() == f"{key}:":
            value = " ".join(part.strip() for part in _block(body, i, len(line) - len(line.lstrip())))
            # a rule made in a loop names itself with an f-string: keep its template
            return ast.literal_eval(value.removeprefix("f"))
    return None


def workflow_rules(rules_dir: Path = ROOT / "workflow" / "rules") -> list[Rule]:
    """Every rule of the .smk files that runs a shell command, with its conda env file."""
    rules = []
    for path in sorted(rules_dir.glob("*.smk")):
        lines = path.read_text().splitlines()
        for start, line in enumerate(lines):
            if not (match := RULE.fullmatch(line)):
                continue
            body = _block(lines, start, len(match["indent"]))
            shell, env = _directive(body, "shell"), _directive(body, "conda")
            if shell is not None:
                name = match["name"] or _directive(body, "name")
                rules.append(Rule(name, (path.parent / env).resolve() if env else None, shell))
    return rules


def shell_commands(shell: str) -> list[list[str]]:
    """The words of each command in a shell line, leading VAR=value settings left out."""
    commands = []
    for part in re.split(r"&&|\|\|?|;", shell):
        words = part.split()
        while words and re.fullmatch(r"\w+=\S*", words[0]):
            words.pop(0)
        if words:
            commands.append(words)
    return commands
