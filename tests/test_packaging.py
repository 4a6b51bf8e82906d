"""pyproject.toml's light core and per-stage extras, the environment files in envs/ that install them, and
the installed CLI."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT, load_script

check_envs = load_script("scripts/check_envs.py")
PROJECT = check_envs.PROJECT
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
ENV_FILES = check_envs.ENV_FILES
# Extras that no stage installs: the tests' own, and the union of the stages for a full install.
NOT_STAGES = {"test", "all"}


def _requirements(lines: list[str]) -> dict[str, str]:
    """Canonical package name -> normalised requirement ("snakemake[reports]>=8.0")."""
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): str(r) for r in requirements if canonicalize_name(r.name) != "midiffusion"}


def _env(path: Path) -> tuple[list[str], dict[str, str]]:
    """The extras an env file installs the project with (`-e ${MIDIFFUSION_ROOT}[a,b]`), and its other pins."""
    pip = check_envs.pip_lines(path)
    return check_envs.project_extras(path), _requirements([line for line in pip if not line.startswith("-")])


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_pins_are_the_core_and_its_extras(path):
    extras, pins = _env(path)
    # an env named after a stage installs its extra; a rule's own env (real_contrast) names the stages it runs
    assert path.stem in extras or path.stem not in EXTRAS, f"{path.name} must install the extra of its stage"
    assert not set(extras) & NOT_STAGES and set(extras) <= set(EXTRAS), f"{path.name}: extras {extras}"
    expected = _requirements(PROJECT["dependencies"] + [d for extra in extras for d in EXTRAS[extra]])
    assert pins == expected, f"{path.name}: {sorted(pins.values())}, pyproject.toml: {sorted(expected.values())}"


def test_every_dependency_is_in_some_env_file():
    covered = set().union(*(_env(path)[1] for path in ENV_FILES))
    stages = [d for extra, group in EXTRAS.items() if extra not in NOT_STAGES for d in group]
    missing = set(_requirements(PROJECT["dependencies"] + stages)) - covered
    assert not missing, f"dependencies missing from every envs/*.yaml: {sorted(missing)}"


def test_each_package_has_one_requirement_everywhere():
    seen: dict[str, str] = {}
    for line in PROJECT["dependencies"] + [d for group in EXTRAS.values() for d in group]:
        for name, requirement in _requirements([line]).items():
            assert seen.setdefault(name, requirement) == requirement, f"{requirement} and {seen[name]}"


def test_all_extra_is_every_stage():
    (everything,) = map(Requirement, EXTRAS["all"])
    assert everything.name == "midiffusion" and everything.extras == set(EXTRAS) - NOT_STAGES


def test_report_stage_needs_no_torch():
    assert "torch" not in _requirements(PROJECT["dependencies"] + EXTRAS["report"])
    check = "import midiffusion.evaluate, midiffusion.figures, midiffusion.tables, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


def test_core_modules_import_only_the_core():
    # The workflow env imports these while Snakemake parses the DAG; the CLI imports stages lazily.
    # (Not scipy: nibabel imports it where it is installed, but runs without it.)
    heavy = ["torch", "pandas", "matplotlib", "skimage", "ants", "nilearn", "nnunetv2", "tqdm"]
    modules = "midiffusion.cli, midiffusion.config, midiffusion.cohort"
    check = f"import {modules}, sys; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_lists_the_workflow_subcommands():
    out = subprocess.run([sys.executable, "-m", "midiffusion.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("phantom", "preprocess", "train", "translate", "baseline", "nnunet-train", "evaluate", "tables"):
        assert command in out.stdout
    listed = [line for line in out.stdout.splitlines() if re.match(r"  [a-z]", line)]
    assert listed and all(re.match(r"  [a-z-]+ {2,}\S", line) for line in listed), "a command name runs into its help"


def _imports_at_load(node: ast.AST):
    """The import statements that run when the module loads: none inside a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports_at_load(child)


def _package_imports() -> dict[str, set[str]]:
    """midiffusion module -> the midiffusion modules it imports at load."""
    graph = {}
    for path in (ROOT / "midiffusion").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = parts[:-1] if path.name != "__init__.py" else parts
        named = set()
        for node in _imports_at_load(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
                continue
            base = ".".join([*package[: len(package) - node.level + 1], node.module or ""]).strip(".")
            named.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
        graph[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = named
    return {module: (named & set(graph)) - {module} for module, named in graph.items()}


def test_package_has_no_import_cycle():
    graph, done = _package_imports(), set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, "import cycle: " + " -> ".join(path[path.index(module):] + [module])
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, path + [module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])
