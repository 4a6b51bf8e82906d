"""The default run from scratch, timed (issue 18): a fresh clone of this repository's HEAD, then
`snakemake all --cores N` there, exactly as README's quick start runs it. Writes into this checkout:

- results/benchmarks/default_run.json: wall_s, cores, machine, commit, date, snakemake's version
  and the peak memory of the largest job;
- results/benchmarks/pipeline_default.csv: per stage (rule) jobs, total and longest wall seconds, peak
  memory, from the run's Snakemake benchmark files (scripts/collect_benchmarks.py);
- every file under results/ that git tracks (the tables, figures and QC README shows), as the run made them.

    .venv/bin/python scripts/default_run.py [--workdir /tmp/midiffusion-default] [--cores 2]

The clone uses this checkout's environment (the interpreter's bin folder on PATH) with its own
package first on PYTHONPATH. Measure on a quiet machine: another job on the same cores slows every
stage (docs/compute.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, check=True, text=True, **kwargs)


def cpu_model() -> str:
    """The CPU's model name (Linux), else platform's guess: runs on "2 cores" differ several-fold by CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/midiffusion-default"))
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.workdir.exists():
        sys.exit(f"{args.workdir}: exists; a from-scratch run needs a new folder")
    commit = run(["git", "rev-parse", "HEAD"], ROOT, capture_output=True).stdout.strip()
    run(["git", "clone", "--quiet", str(ROOT), str(args.workdir)], ROOT)
    # the clone's package, not this checkout's editable install, so edits here cannot leak into the run
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "PYTHONPATH": str(args.workdir)}
    version = run(["snakemake", "--version"], args.workdir, capture_output=True, env=env).stdout.strip()
    began = time.perf_counter()
    with open(args.workdir / "default_run.log", "w") as log:
        run(["snakemake", "all", "--cores", str(args.cores)], args.workdir, env=env, stdout=log,
            stderr=subprocess.STDOUT)
    wall_s = time.perf_counter() - began
    stages = args.workdir / "results/benchmarks/pipeline_default.csv"
    run([sys.executable, str(ROOT / "scripts/collect_benchmarks.py"), str(stages), "--note",
         f"from-scratch default run (scripts/default_run.py), commit {commit[:7]}, {args.cores} cores"], args.workdir)
    record = {
        "wall_s": round(wall_s, 1), "cores": args.cores,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {cpu_model()}",
        "commit": commit, "date": datetime.date.today().isoformat(), "snakemake": version,
        "peak_job_rss_mb": float(pd.read_csv(stages)["peak_rss_mb"].max()),
    }
    (args.workdir / "results/benchmarks/default_run.json").write_text(json.dumps(record, indent=2) + "\n")
    tracked = run(["git", "ls-files", "results"], args.workdir, capture_output=True).stdout.split()
    for relative in [*tracked, "results/benchmarks/default_run.json"]:
        made = args.workdir / relative
        if made.exists():
            (ROOT / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(made, ROOT / relative)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
