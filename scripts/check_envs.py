"""Build each envs/*.yaml as a clean venv and run its rules on the ci configuration's inputs.

A venv from the env file's pip lines stands in for `snakemake --sdm conda` where conda's channels are out
of reach (envs/README.md says where the two can differ). Writes results/benchmarks/envs.json: per env, what
it installs, its install seconds, and each rule's result.

    .venv/bin/python scripts/check_envs.py [--work /tmp/midiffusion-envs] [--envs data report]

First the whole ci workflow (with `real_contrast` and `supervised_bound`) runs once with this interpreter's
Snakemake, for every rule's inputs. The workflow env, built first, must parse the workflow; its Snakemake
then forces each rule of every other env to run again, with that env's bin the only Python environment on PATH.
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

from machine import machine_description

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
# How an env file installs this checkout: `..` would be .snakemake/, where conda runs pip (envs/README.md).
EDITABLE = re.compile(r"-e \$\{MIDIFFUSION_ROOT\}\[([a-z,]+)\]")
RULE = re.compile(r"(?P<indent> *)(?:rule|checkpoint)(?: (?P<name>\w+))?:")
CI_CONFIG = ROOT / "config" / "ci.yaml"
TARGETS = ["all", "real_contrast", "supervised_bound"]  # every rule runs: these two are outside `all`
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNNER_ENV = "workflow"  # the env that runs Snakemake itself
# Envs in the order the pipeline makes their rules' inputs: an env's forced rules rewrite outputs that the
# next env's rules read, so a consumer checked before its producer would make Snakemake rerun the producer
# in the consumer's env (report's evaluate asked for nnU-Net predictions). tests/test_envs.py holds every
# env but RUNNER_ENV to this list.
PIPELINE_ORDER = ["data", "diffusion", "segmentation", "report", "real_contrast"]


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


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python*/site-packages"))


def build_venv(env_file: Path, venv: Path, work: Path) -> float:
    """A clean venv with the env file's pip lines under constraints.txt; the seconds it took. pip runs as conda
    runs it for Snakemake: on a requirements file, in a folder that is not the repository's."""
    shutil.rmtree(venv, ignore_errors=True)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    folder = work / "conda"
    folder.mkdir(parents=True, exist_ok=True)
    requirements = folder / f"{env_file.stem}.requirements.txt"
    requirements.write_text("\n".join(pip_lines(env_file)) + "\n")
    command = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt",
               "-r", requirements.name]
    subprocess.run(command, cwd=folder, env=os.environ | {"MIDIFFUSION_ROOT": str(ROOT)}, check=True)
    return time.perf_counter() - began


def installed_versions(venv: Path, env_file: Path) -> dict[str, str]:
    """Version of each package the env file names, as pip installed it."""
    listed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
    versions = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed)}
    return {name: versions.get(name, "missing") for name in sorted(installed_distributions(env_file))}


def snakemake_runner(workflow_venv: Path, runner: Path) -> Path:
    """A Python for the workflow env's Snakemake whose bin holds nothing else: common.smk puts the bin of
    the Python that runs Snakemake first on PATH, and a `midiffusion` there would shadow the rule's env's."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(runner)], check=True)
    pth = f"import site; site.addsitedir({str(_site_packages(workflow_venv))!r})\n"
    (_site_packages(runner) / "workflow_env.pth").write_text(pth)
    return runner / "bin" / "python"


def snakemake(python: Path | str, workdir: Path, args: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run the workflow on the ci configuration in `workdir`; the exit code and the output (also in `log`)."""
    command = [str(python), "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
               "--configfile", str(CI_CONFIG), "--directory", str(workdir), "--cores", "1", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    return result.returncode, result.stdout + result.stderr


def env_only(venv: Path) -> dict[str, str]:
    """The environment a rule runs in under conda: its env's bin first on PATH, no other Python environment."""
    unset = {"VIRTUAL_ENV", "PYTHONPATH", "CONDA_PREFIX", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in unset} | {"PATH": f"{venv / 'bin'}:{SYSTEM_PATH}"}


def concrete_rules(rule: Rule, listed: list[str]) -> list[str]:
    """The names Snakemake lists for a rule: one per loop value where the name is a template."""
    pattern = re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(rule.name))
    return [name for name in listed if re.fullmatch(pattern, name)]


def run_rule(runner: Path, workdir: Path, venv: Path, rule: str, log: Path) -> dict:
    """Force every job of one rule to run again, in the env `venv` alone; its inputs are all there already."""
    began = time.perf_counter()
    # params only: the ancestors that other forced rules rewrote earlier are not run again here
    args = [*TARGETS, "--forcerun", rule, "--until", rule, "--rerun-triggers", "params"]
    code, output = snakemake(runner, workdir, args, env_only(venv), log)
    ran = set(re.findall(r"^\s*(?:local)?rule (\w+):$", output, re.M))
    result = {"passed": code == 0 and rule in ran, "seconds": round(time.perf_counter() - began, 1),
              "log": str(log)}
    if ran - {rule}:
        result["also_ran"] = sorted(ran - {rule})
    if not result["passed"]:
        result["output_tail"] = output.splitlines()[-15:]
    return result


def install(env_file: Path, work: Path) -> tuple[Path, dict]:
    """The env's venv, and what it installs: its pip lines, the versions pip chose, the install seconds."""
    venv = work / "venvs" / env_file.stem
    seconds = build_venv(env_file, venv, work)
    return venv, {"installs": pip_lines(env_file), "install_s": round(seconds, 1),
                  "versions": installed_versions(venv, env_file)}


def check_rules(env_file: Path, work: Path, runner: Path, listed: list[str]) -> dict:
    """Install the env and run each of its rules in it alone."""
    venv, record = install(env_file, work)
    names = [name for rule in workflow_rules() if rule.env == env_file for name in concrete_rules(rule, listed)]
    logs = work / "logs" / env_file.stem
    record["rules"] = {name: run_rule(runner, work / "run", venv, name, logs / f"{name}.log") for name in names}
    return record


def check_all(work: Path, names: list[str]) -> dict[str, dict]:
    """The ci run for every rule's inputs, then each env's record, the Snakemake env's first."""
    # the ci run: this interpreter's Snakemake, with this checkout's package
    code, _ = snakemake(sys.executable, work / "run", TARGETS, os.environ | {"PYTHONPATH": str(ROOT)},
                        work / "logs" / "ci_run.log")
    if code:
        sys.exit(f"the ci run failed: {work / 'logs' / 'ci_run.log'}")
    workflow_venv, records = install(ROOT / "envs" / f"{RUNNER_ENV}.yaml", work)
    runner = snakemake_runner(workflow_venv, work / "runner")
    # the Snakemake env's own check: it parses the workflow (and it runs every rule below)
    code, listed = snakemake(runner, work / "run", ["--list-rules"], env_only(work / "runner"),
                             work / "logs" / f"{RUNNER_ENV}.log")
    records["rules"] = {"snakemake --list-rules": {"passed": code == 0}}
    envs = {RUNNER_ENV: records}
    for name in (n for n in PIPELINE_ORDER if n in names):
        envs[name] = check_rules(ROOT / "envs" / f"{name}.yaml", work, runner, listed.split())
    return envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/midiffusion-envs"),
                        help="the venvs (several GB each), the ci run and the logs")
    parser.add_argument("--envs", nargs="+", default=[path.stem for path in ENV_FILES],
                        choices=[path.stem for path in ENV_FILES], help=f"(the {RUNNER_ENV} env is always built)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "envs.json")
    args = parser.parse_args()
    envs = check_all(args.work.resolve(), args.envs)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    record = {"date": time.strftime("%Y-%m-%d"), "commit": commit.strip(), "machine": machine_description(),
              "stand_in": "a venv per env from its pip lines (envs/README.md)", "envs": envs}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    summary = {name: {rule: result["passed"] for rule, result in env["rules"].items()} for name, env in envs.items()}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
