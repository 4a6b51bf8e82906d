"""Summarise Snakemake's per-job benchmark files (benchmarks/**/*.tsv) into one CSV per rule:
date of the rule's newest benchmark file, jobs, total and max wall seconds, peak RSS (MB).
Usage: python scripts/collect_benchmarks.py OUT.csv [--note TEXT] [--keep RULE ...] [--skip GLOB ...]
(--keep: those rules' rows stay as OUT.csv has them, e.g. when the latest job of a rule only resumed
a finished training, so its benchmark does not measure the stage; --skip: benchmark files left out,
by a glob on their path under benchmarks/, e.g. the supervised bound's 'nnunet_*/Dataset[67]*')."""

import argparse
import os
import platform
from datetime import date
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks"))
    parser.add_argument("--note", default="")
    parser.add_argument("--keep", nargs="+", default=[], metavar="RULE")
    parser.add_argument("--skip", nargs="+", default=[], metavar="GLOB")
    args = parser.parse_args()
    rows = []
    for path in sorted(args.benchmarks.rglob("*.tsv")):
        relative = path.relative_to(args.benchmarks)
        if any(relative.match(pattern) for pattern in args.skip):
            continue
        rule = relative.parts[0].removesuffix(".tsv")
        table = pd.read_csv(path, sep="\t").iloc[-1]  # the latest run of that job
        rows.append({"rule": rule, "seconds": float(table["s"]), "max_rss_mb": float(table["max_rss"]),
                     "date": date.fromtimestamp(path.stat().st_mtime).isoformat()})
    jobs = pd.DataFrame(rows)
    summary = jobs.groupby("rule", sort=False).agg(
        date=("date", "max"), jobs=("seconds", "size"), total_s=("seconds", "sum"), max_job_s=("seconds", "max"),
        peak_rss_mb=("max_rss_mb", "max"),
    ).reset_index()
    summary.insert(0, "machine", f"{platform.machine()} {os.cpu_count()} cpus")
    summary.insert(0, "date", summary.pop("date"))
    summary["note"] = args.note
    if args.keep:
        kept = pd.read_csv(args.out)
        kept = kept[kept["rule"].isin(args.keep)]
        missing = set(args.keep) - set(kept["rule"])
        if missing:
            raise SystemExit(f"{args.out}: no rows to keep for {', '.join(sorted(missing))}")
        summary = pd.concat([summary[~summary["rule"].isin(args.keep)], kept]).sort_values("rule")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary.round(1).to_csv(args.out, index=False)
    print(summary.round(1).to_string(index=False))
    print(f"sum of job wall times: {summary['total_s'].sum() / 60:.1f} min")


if __name__ == "__main__":
    main()
