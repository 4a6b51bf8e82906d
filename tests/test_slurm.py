"""The workflow runs on a real SLURM cluster through profiles/slurm.

Needs a running cluster with accounting (`bash .ci/slurm.sh start`). Without one the tests
skip, except under CI (env CI=true), where a missing cluster is a failure.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
CONFIGFILE = REPO / "config" / "ci.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
# The test cluster has no GPU: this layer sets the rules' `gpu=1` to 0.
CPU_LAYER = REPO / "profiles" / "slurm-cpu"
# Small target set: every job of it becomes one SLURM job (~15-25 s each on 2 cores).
TARGETS = ["results/preprocessed/sub-01/qc.json"]
RUN_TIMEOUT_S = 900
# Outputs upstream of any ANTs registration are bit-identical between two runs. ANTs
# registration (template brain extraction, source-to-target rigid) is not reproducible run
# to run, even with one thread and a fixed seed (measured: registration errors differing by
# up to 0.35 mm at 4 mm voxels): those outputs are compared by structure (files, shapes,
# affines, columns, keys, labels) and their numbers within NUMBER_ATOL.
IDENTICAL_DIRS = ("cohort", "qc")
NUMBER_ATOL = 1.0

SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")
RUN_ID = re.compile(r"SLURM run ID: (\S+)")
STEPS_DONE = re.compile(r"(\d+) of (\d+) steps \(100%\) done")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def _node_usable(state: str) -> bool:
    """A compact sinfo node state (%t) that takes jobs: idle, mix, alloc, comp (finishing) ..."""
    unusable = ("down", "drain", "drng", "fail", "maint", "unk", "inval", "boot", "resv")
    # A trailing "*" means slurmd does not answer.
    return not state.endswith("*") and not state.startswith(unusable)


def _cluster_problem() -> str | None:
    """Why no SLURM cluster can take jobs here, or None when one can."""
    for tool in ("sinfo", "sbatch", "sacct"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: SLURM is not installed (bash .ci/slurm.sh start)"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s: slurmctld is not running"
    if states.returncode != 0:
        return f"sinfo failed, the cluster does not answer: {states.stderr.strip()}"
    if not any(_node_usable(state) for state in states.stdout.split()):
        return f"no SLURM node can run jobs (node states: {states.stdout.split()})"
    accounting = subprocess.run(["sacct", "-n", "-X"], capture_output=True, text=True)
    if accounting.returncode != 0:
        return f"sacct fails, SLURM has no accounting: {accounting.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    problem = _cluster_problem()
    if problem is None:
        return
    if _in_ci():
        pytest.fail(f"CI needs the SLURM cluster of .ci/slurm.sh: {problem}")
    pytest.skip(problem)


@dataclass
class Run:
    """One finished `snakemake` run of TARGETS in its own directory."""

    directory: Path
    log: str


def _job_env() -> dict[str, str]:
    # SLURM jobs inherit this environment (sbatch --export=ALL) and run `snakemake` and
    # `midiffusion` from PATH: put this interpreter's venv first.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _snakemake(directory: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(SNAKEFILE),
        "--directory", str(directory),
        "--configfile", str(CONFIGFILE),
        *args,
    ]  # fmt: skip


def _run_workflow(directory: Path, *profiles: str) -> Run:
    directory.mkdir(parents=True)
    command = _snakemake(directory, *profiles, *TARGETS)
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_job_env(),
        timeout=RUN_TIMEOUT_S,
        cwd=directory,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{log[-6000:]}"
    return Run(directory, log)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory) -> Run:
    return _run_workflow(
        tmp_path_factory.mktemp("slurm") / "run",
        *("--profile", str(SLURM_PROFILE), "--workflow-profile", str(CPU_LAYER)),
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Run:
    return _run_workflow(
        tmp_path_factory.mktemp("local") / "run", "--profile", str(LOCAL_PROFILE)
    )


def _profile_resources() -> dict[str, str]:
    """The SLURM profile's default resources, string values unquoted."""
    config = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    return {k: str(v).strip("'\"") for k, v in config["default-resources"].items()}


def _sacct(job_ids: list[str]) -> pd.DataFrame:
    fields = "JobID,JobName,Comment,Partition,Account,State,ExitCode,Elapsed"
    out = subprocess.run(
        ["sacct", "-X", "-P", "-o", fields, "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(out)  # the accounting lines, for the record (pytest -s)
    rows = [line.split("|") for line in out.strip().splitlines()]
    return pd.DataFrame(rows[1:], columns=rows[0])


def test_every_job_runs_on_slurm_and_is_accounted(slurm_run):
    job_ids = SUBMITTED.findall(slurm_run.log)
    steps = STEPS_DONE.search(slurm_run.log)
    assert steps, f"the run did not finish all steps:\n{slurm_run.log[-3000:]}"
    assert len(job_ids) == int(steps.group(2)), (
        f"{len(job_ids)} SLURM submissions for {steps.group(2)} jobs: some ran locally"
    )
    run_id = RUN_ID.search(slurm_run.log).group(1)
    jobs = _sacct(job_ids)
    record = jobs.to_string()
    assert sorted(jobs.JobID) == sorted(job_ids), record
    assert (jobs.State == "COMPLETED").all() and (jobs.ExitCode == "0:0").all(), record
    # The profile's job-name prefix, partition and account reached sbatch.
    profile = _profile_resources()
    assert (jobs.JobName == run_id).all() and run_id.startswith("midiffusion_"), record
    assert (jobs.Partition == profile["slurm_partition"]).all(), record
    assert (jobs.Account == profile["slurm_account"]).all(), record
    assert jobs.Comment.str.startswith("rule_").all(), record


def _result_files(run: Run) -> set[Path]:
    results = run.directory / "results"
    return {p.relative_to(results) for p in results.rglob("*") if p.is_file()}


def _assert_numbers_close(a, b, exact: bool, name: str) -> None:
    atol = 0.0 if exact else NUMBER_ATOL
    np.testing.assert_allclose(
        np.asarray(a, float), np.asarray(b, float), rtol=0, atol=atol, err_msg=name
    )


def _assert_same_nifti(a: Path, b: Path, exact: bool, name: str) -> None:
    image_a, image_b = nib.load(a), nib.load(b)
    assert image_a.shape == image_b.shape, name
    np.testing.assert_allclose(image_a.affine, image_b.affine, atol=1e-6, err_msg=name)
    if exact:
        np.testing.assert_array_equal(image_a.get_fdata(), image_b.get_fdata(), err_msg=name)


def _assert_same_table(a: Path, b: Path, exact: bool, name: str) -> None:
    sep = "\t" if name.endswith(".tsv") else ","
    table_a, table_b = pd.read_csv(a, sep=sep), pd.read_csv(b, sep=sep)
    assert list(table_a.columns) == list(table_b.columns) and table_a.shape == table_b.shape, name
    numeric = table_a.select_dtypes("number").columns
    labels = table_a.columns.difference(numeric)
    pd.testing.assert_frame_equal(table_a[labels], table_b[labels], obj=name)
    _assert_numbers_close(table_a[numeric], table_b[numeric], exact, name)


def _assert_same_json(a: Path, b: Path, exact: bool, name: str) -> None:
    record_a, record_b = json.loads(a.read_text()), json.loads(b.read_text())
    assert record_a.keys() == record_b.keys(), name
    for key, value in record_a.items():
        if isinstance(value, (int, float)):
            _assert_numbers_close(value, record_b[key], exact, f"{name}: {key}")
        else:
            assert value == record_b[key], f"{name}: {key}"


def _assert_same_output(relative: Path, slurm_file: Path, local_file: Path) -> None:
    exact = relative.parts[0] in IDENTICAL_DIRS
    name = str(relative)
    if name.endswith((".nii", ".nii.gz")):
        _assert_same_nifti(slurm_file, local_file, exact, name)
    elif name.endswith((".csv", ".tsv")):
        _assert_same_table(slurm_file, local_file, exact, name)
    elif name.endswith(".json"):
        _assert_same_json(slurm_file, local_file, exact, name)
    elif exact:
        assert slurm_file.read_bytes() == local_file.read_bytes(), name
    else:
        assert slurm_file.stat().st_size > 0 and local_file.stat().st_size > 0, name


def test_slurm_outputs_match_a_local_run(slurm_run, local_run):
    files = _result_files(slurm_run)
    assert files == _result_files(local_run)
    for target in TARGETS:
        assert Path(target).relative_to("results") in files, target
    assert any(f.parts[0] in IDENTICAL_DIRS for f in files), "nothing compared bit for bit"
    for relative in sorted(files):
        _assert_same_output(
            relative,
            slurm_run.directory / "results" / relative,
            local_run.directory / "results" / relative,
        )


def test_cpu_layer_removes_every_gpu_request(tmp_path):
    # Dry run of the whole workflow: a rule that asks for a GPU but is missing from the
    # layer (new or renamed) would be refused by a CPU-only cluster.
    command = _snakemake(
        tmp_path, "--dry-run", "--profile", str(SLURM_PROFILE), "--workflow-profile", str(CPU_LAYER)
    )
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    plan = done.stdout + done.stderr
    assert done.returncode == 0, plan[-3000:]
    assert "gpu=0" in plan, "the CPU layer was not applied"
    asking = re.findall(r"rule (\w+):(?:(?!\nrule ).)*?gpu=[1-9]", plan, flags=re.S)
    assert not asking, f"jobs still asking for a GPU: {sorted(set(asking))}"
