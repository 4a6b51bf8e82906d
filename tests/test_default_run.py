"""scripts/default_run.py: where a run's records go, and an experiment it cannot run refused up front
(the timed run itself takes an hour: docs/hardware.md)."""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, load_script

SCRIPT = ROOT / "scripts" / "default_run.py"



def test_the_default_and_an_experiment_record_to_their_own_files():
    records = load_script("scripts/default_run.py").records
    assert records(None) == ("results/benchmarks/pipeline_default.csv", "results/benchmarks/default_run.json",
                             None)
    assert records(Path("experiments/archive/native_resolution_64.yaml")) == (
        "results/benchmarks/native_resolution_64_run.csv", "results/benchmarks/native_resolution_64_run.json",
        "results/tables/native_resolution_64_summary.csv")


def test_an_uncommitted_experiment_is_refused_before_the_clone(tmp_path):
    stray = tmp_path / "mine.yaml"
    stray.write_text("slices:\n  size: 64\n")
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, SCRIPT, "--workdir", workdir, "--experiment", stray],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert f"{stray}: not a committed file of this repository" in result.stderr
    assert not workdir.exists()
