"""scripts/collect_benchmarks.py on hand-made Snakemake benchmark files."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "collect_benchmarks.py"
HEADER = "s\th:m:s\tmax_rss\n"


def _write(path: Path, seconds: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:00\t{rss}\n")


def _collect(tmp_path: Path, *extra: str) -> pd.DataFrame:
    out = tmp_path / "pipeline.csv"
    subprocess.run([sys.executable, SCRIPT, out, "--benchmarks", tmp_path / "benchmarks", *extra],
                   check=True, capture_output=True)
    return pd.read_csv(out).set_index("rule")


def test_rules_summed_over_jobs_and_kept_rows_survive(tmp_path):
    _write(tmp_path / "benchmarks/preprocess/sub-01.tsv", 10.0, 100.0)
    _write(tmp_path / "benchmarks/preprocess/sub-02.tsv", 30.0, 300.0)
    _write(tmp_path / "benchmarks/train.tsv", 600.0, 50.0)
    first = _collect(tmp_path, "--note", "first")
    assert first.loc["preprocess", ["jobs", "total_s", "max_job_s", "peak_rss_mb"]].tolist() == [2, 40.0, 30.0, 300.0]
    _write(tmp_path / "benchmarks/train.tsv", 5.0, 50.0)  # a rerun that only resumed
    _write(tmp_path / "benchmarks/preprocess/sub-01.tsv", 20.0, 100.0)
    second = _collect(tmp_path, "--note", "second", "--keep", "train")
    assert second.loc["train", "total_s"] == 600.0 and second.loc["train", "note"] == "first"
    assert second.loc["preprocess", "total_s"] == 50.0 and second.loc["preprocess", "note"] == "second"


def test_each_rule_is_dated_by_its_newest_benchmark_file(tmp_path):
    _write(tmp_path / "benchmarks/cohort/sub-01.tsv", 1.0, 10.0)
    _write(tmp_path / "benchmarks/cohort/sub-02.tsv", 1.0, 10.0)
    _write(tmp_path / "benchmarks/train.tsv", 1.0, 10.0)
    os.utime(tmp_path / "benchmarks/cohort/sub-01.tsv", (1.6e9, 1.6e9))  # 2020-09-13
    os.utime(tmp_path / "benchmarks/cohort/sub-02.tsv", (1699963200, 1699963200))  # 2023-11-14 12:00 UTC
    table = _collect(tmp_path)
    assert table.loc["cohort", "date"] == "2023-11-14"
    assert table.loc["train", "date"] > "2025"
    assert list(pd.read_csv(tmp_path / "pipeline.csv").columns[:3]) == ["date", "machine", "rule"]


def test_skipped_benchmark_files_are_left_out(tmp_path):
    _write(tmp_path / "benchmarks/nnunet_train/Dataset501_T1w.tsv", 100.0, 10.0)
    _write(tmp_path / "benchmarks/nnunet_train/Dataset601_PDw.tsv", 7.0, 10.0)
    _write(tmp_path / "benchmarks/supervised_bound.tsv", 1.0, 10.0)
    table = _collect(tmp_path, "--skip", "nnunet_train/Dataset6*", "supervised_bound.tsv")
    assert table.loc["nnunet_train", ["jobs", "total_s"]].tolist() == [1, 100.0]
    assert "supervised_bound" not in table.index
