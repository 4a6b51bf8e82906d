"""The correlation bound of intensity maps (issue 16): on each test subject of a run, how well the best
voxelwise intensity map of the source could follow the real T1w (metrics.intensity_bound_corr, fitted
on the subject's own T1w, so optimistic), beside the correlation that the run's translations reached
(its metrics_long.csv). A translation past the bound uses more than the source's intensities.

    .venv/bin/python scripts/intensity_bound_corr.py --run RUN \
        --out-csv results/tables/intensity_bound_corr.csv --out-md results/tables/intensity_bound_corr.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from midiffusion.io import atomic_path, check_mask, check_same_grid, load_volume
from midiffusion.metrics import intensity_bound_corr

METHODS = ("invert", "atlas_map", "midiffusion")


def bound_rows(run: Path, target: str = "T1w") -> pd.DataFrame:
    """One row per test subject and source: the bound and each method's correlation in that run."""
    metrics = pd.read_csv(run / "results/tables/metrics_long.csv", dtype={"subject": str})
    corr = metrics[(metrics["metric"] == "corr") & metrics["method"].isin(METHODS)]
    reached = corr.pivot_table(index=["anatomy", "subject", "source"], columns="method", values="value")
    rows = []
    for anatomy, subject, source in reached.index:
        folder = run / f"results/preprocessed/sub-{subject}"
        image, reference, mask = volumes = [load_volume(folder / name) for name in
                                            (f"{source}_norm.nii.gz", f"{target}_norm.nii.gz", "brainmask.nii.gz")]
        check_same_grid(volumes)
        bound = intensity_bound_corr(image.data, reference.data, check_mask(mask.data, mask.path))
        rows.append({"anatomy": anatomy, "subject": subject, "source": source, "bound": bound,
                     **reached.loc[(anatomy, subject, source)][list(METHODS)].to_dict()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run folder (its results/ are read)")
    parser.add_argument("--out-csv", type=Path, required=True)
    parser.add_argument("--out-md", type=Path, required=True)
    args = parser.parse_args()
    rows = bound_rows(args.run)
    means = rows.groupby(["anatomy", "source"], sort=False)[["bound", *METHODS]].mean().reset_index()
    means = means.rename(columns={"bound": "best intensity map (bound)"})
    with atomic_path(args.out_csv) as tmp:
        rows.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(args.out_md) as tmp:
        tmp.write_text("# Correlation with the real T1w inside the brain: the best intensity map's bound and the "
                       "run's roads, mean over each anatomy's test subjects (scripts/intensity_bound_corr.py)\n\n"
                       + means.to_markdown(index=False, floatfmt=".3f") + "\n")
    print(means.to_string(index=False))


if __name__ == "__main__":
    main()
