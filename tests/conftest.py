import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def load_script(path: str):
    """A script (relative to the repository, e.g. "scripts/default_run.py") as a module: the scripts are not
    a package. Its folder goes on sys.path, where the scripts import each other from when they run, and the
    module into sys.modules first, where dataclasses look their module up."""
    script = ROOT / path
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    return module


def user_env() -> dict[str, str]:
    """The environment of a user who runs `.venv/bin/snakemake` without activating the venv:
    the venv's bin is not on PATH (the workflow must find `midiffusion` itself)."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
    return {**os.environ, "PATH": os.pathsep.join(path)}


def snakemake(workdir: Path, *args: str, configfile: Path = ROOT / "config" / "ci.yaml", check: bool = True):
    """Run the project's workflow in `workdir` with the venv's snakemake, as the README does."""
    env = user_env()
    command = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(configfile), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    if check and result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
                         if "rror" in p.read_text())
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-6000:]}\n{logs}")
    return result


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> Path:
    """The whole ci workflow, run once for every test that checks its outputs."""
    workdir = tmp_path_factory.mktemp("ci_workflow")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(scope="module")
def one_thread():
    """Tiny torch work on shared cores: one OpenMP thread is ~10x faster than two spinning against other work."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
