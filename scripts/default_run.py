"""The default run from scratch, timed: a fresh clone of this repository's HEAD, then
`snakemake all --cores N` there, exactly as README's quick start runs it. Writes into this checkout:

- results/benchmarks/default_run.json: wall_s, cores, machine, commit, date, snakemake's version
  and the peak memory of the largest job;
- results/benchmarks/pipeline_default.csv: per stage (rule) jobs, total and longest wall seconds, peak
  memory, from the run's Snakemake benchmark files (scripts/collect_benchmarks.py);
- every file under results/ that git tracks (the tables, figures and QC README shows), as the run made them.

    .venv/bin/python scripts/default_run.py [--workdir /tmp/midiffusion-default] [--cores 2]

With `--experiment experiments/NAME.yaml` it times the default with that override instead (snakemake
`--configfile config/config.yaml experiments/NAME.yaml`) and writes only its own records:
results/benchmarks/NAME_run.{json,csv} and the run's summary as results/tables/NAME_summary.csv.

The clone uses this checkout's environment (the interpreter's bin folder on PATH) with its own
package first on PYTHONPATH. Measure on a quiet machine: another job on the same cores slows every
stage (docs/hardware.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from machine import machine_description

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, check=True, text=True, **kwargs)


def records(experiment: Path | None) -> tuple[str, str, str | None]:
    """Where a run's records go, relative to the repository: stage times, the run's JSON and, for an
    experiment, its summary table (the default's tables are copied to their own tracked places)."""
    if experiment is None:
        return "results/benchmarks/pipeline_default.csv", "results/benchmarks/default_run.json", None
    return (f"results/benchmarks/{experiment.stem}_run.csv", f"results/benchmarks/{experiment.stem}_run.json",
            f"results/tables/{experiment.stem}_summary.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/midiffusion-default"))
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--experiment", type=Path, help="an override under experiments/, committed: the "
                        "default with it, recorded under its own name; the default's results stay untouched")
    args = parser.parse_args()
    if args.workdir.exists():
        sys.exit(f"{args.workdir}: exists; a from-scratch run needs a new folder")
    commit = run(["git", "rev-parse", "HEAD"], ROOT, capture_output=True).stdout.strip()
    configs = []
    if args.experiment is not None:
        path = args.experiment.resolve()
        tracked = path.is_relative_to(ROOT) and not subprocess.run(
            ["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True).returncode
        if not tracked:
            sys.exit(f"{args.experiment}: not a committed file of this repository (the run clones HEAD)")
        experiment = path.relative_to(ROOT).as_posix()
        configs = ["--configfile", "config/config.yaml", experiment]
    stages_at, record_at, summary_at = records(args.experiment)
    run(["git", "clone", "--quiet", str(ROOT), str(args.workdir)], ROOT)
    # the clone's package, not this checkout's editable install, so edits here cannot leak into the run
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONPATH": str(args.workdir)}
    version = run(["snakemake", "--version"], args.workdir, capture_output=True, env=env).stdout.strip()
    began = time.perf_counter()
    with open(args.workdir / "default_run.log", "w") as log:
        run(["snakemake", "all", "--cores", str(args.cores), *configs], args.workdir, env=env, stdout=log,
            stderr=subprocess.STDOUT)
    wall_s = time.perf_counter() - began
    name = f"experiment {args.experiment.name}" if args.experiment else "default run"
    run([sys.executable, str(ROOT / "scripts/collect_benchmarks.py"), str(args.workdir / stages_at), "--note",
         f"from-scratch {name} (scripts/default_run.py), commit {commit[:7]}, {args.cores} cores"], args.workdir)
    record = {
        "wall_s": round(wall_s, 1), "cores": args.cores,
        "machine": machine_description(),
        "commit": commit, "date": datetime.date.today().isoformat(), "snakemake": version,
        "peak_job_rss_mb": float(pd.read_csv(args.workdir / stages_at)["peak_rss_mb"].max()),
    }
    (args.workdir / record_at).write_text(json.dumps(record, indent=2) + "\n")
    if summary_at is None:
        made = run(["git", "ls-files", "results"], args.workdir, capture_output=True).stdout.split()
    else:
        shutil.copy2(args.workdir / "results/tables/summary.csv", args.workdir / summary_at)
        made = [stages_at, summary_at]
    for relative in [*made, record_at]:
        if (args.workdir / relative).exists():
            (ROOT / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.workdir / relative, ROOT / relative)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
