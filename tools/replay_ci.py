"""Does a change of code change what the workflow computes? Replays the reproducible rules of a finished
ci run with two checkouts of the project and compares every output file.

Two whole runs on different machines cannot be compared file for file: nnU-Net's training is seeded
(`nnunet.seed`) but takes every core of the machine, and its floating-point sums depend on the CPU and
the number of threads, so its segmentations (and every Dice) move between machines. So both checkouts
start from copies of one finished run (`snakemake --configfile config/ci.yaml` in RUN) and rerun only
REPLAYED, the rules whose outputs are reproducible (ANTs seeded, one ITK and one torch thread), keeping
the run's nnU-Net segmentations. The comparison is of the voxels and affines of NIfTI files, the weights
of model files, and the bytes of everything else; nnU-Net's folders are left out.

    .venv/bin/python tools/replay_ci.py --run RUN --before ../checkout-a --after ../checkout-b --work /tmp/replay
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPLAYED = ["cohort", "anatomy", "preprocess", "qc_tables", "slices", "train_diffusion", "baseline", "translate",
            "evaluate", "intensity_bound", "intensity_bound_corr", "tables"]
TARGETS = ["results/tables/summary.csv", "results/tables/intensity_bound.csv",
           "results/tables/intensity_bound_corr.csv", "results/tables/atropos.csv"]
SKIPPED = {"nnunet", "segmentations"}  # nnU-Net's own folders, and its segmentations kept from RUN


def replay(run: Path, checkout: Path, folder: Path, config: Path) -> None:
    """A copy of the run in `folder`, its REPLAYED rules run again with `checkout`'s code."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run, folder, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    env = os.environ | {"PYTHONPATH": str(checkout), "ANTS_RANDOM_SEED": os.environ.get("ANTS_RANDOM_SEED", "1")}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "workflow" / "Snakefile"),
               "--directory", str(folder), "--configfile", str(config), "--cores", "1",
               "--allowed-rules", *REPLAYED, "--forcerun", *REPLAYED, "--", *TARGETS]
    log = folder.with_suffix(".log")
    with log.open("w") as out:
        if subprocess.run(command, cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT).returncode:
            sys.exit(f"the replay with {checkout} failed: {log}")


def same_file(a: Path, b: Path) -> bool:
    if a.name.endswith(".nii.gz"):
        first, second = nib.load(a), nib.load(b)
        return np.array_equal(first.affine, second.affine) and np.array_equal(
            np.asanyarray(first.dataobj), np.asanyarray(second.dataobj))
    if a.suffix == ".pt":
        first, second = (torch.load(path, weights_only=True)["model"] for path in (a, b))
        return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    return filecmp.cmp(a, b, shallow=False)


def compare(before: Path, after: Path) -> list[str]:
    """The output files (relative paths) that differ, or exist on one side only."""
    files = {side: {p.relative_to(side) for p in side.rglob("*") if p.is_file() and not SKIPPED & set(p.parts)}
             for side in (before, after)}
    differ = sorted(str(p) for p in files[before] ^ files[after])
    differ += sorted(str(p) for p in files[before] & files[after] if not same_file(before / p, after / p))
    print(f"{len(files[before] & files[after])} files on both sides, {len(differ)} differ")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished ci run's folder")
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the project")
    parser.add_argument("--after", type=Path, required=True, help="another checkout")
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "ci.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/replay_ci"))
    args = parser.parse_args()
    sides = [args.work / "before", args.work / "after"]
    for checkout, folder in zip((args.before, args.after), sides):
        replay(args.run.resolve(), checkout.resolve(), folder, args.config.resolve())
    differ = compare(*(folder / "results" for folder in sides))
    print("\n".join(differ))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
