"""How far any translation could follow a phantom run's real T1w: the ceiling of the correlation, against
which a correlation target for the translations is read.

The phantom renders every contrast of a subject from one anatomy (tissue partial volumes under a
smooth warp), per-subject tissue relaxation parameters, smooth texture fields of T1, T2 and PD, and,
per contrast, its own bias field and Rician noise (midiffusion/phantom.py). The workflow scores a
translation by its correlation with the subject's preprocessed T1w (N4-corrected, normalised), inside
the run's brain mask. That reference keeps its own noise and whatever bias N4 left, and no source image
shows either (each contrast's bias and noise are drawn apart). The simulator, rerun with the cohort's
seed, can leave them out, so for each test subject of a run this measures the correlation with the
run's reference of:
- `perfect_translation`: the T1w without noise or bias, i.e. a translation that knew everything about
  the subject (anatomy, tissue parameters, texture): the ceiling of any translation against this reference;
- `anatomy_and_tissues`: the same without texture, from the anatomy and tissue parameters alone;
- `clean_<source>_map`: the best voxelwise intensity map (metrics.intensity_bound_corr) of the source
  rendered without noise or bias, on the target grid: what intensities could reach if the source were clean;
beside the run's own midiffusion (`midiffusion_<source>`, from its metrics_long.csv).

    .venv/bin/python tools/studies/phantom_information.py --run RUN --anatomy-maps RUN/results/anatomy/colin27_2mm.nii.gz \
        --out-csv results/tables/phantom_information.csv --out-md results/tables/phantom_information.md
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.io import InputError, atomic_path, check_same_grid, load_volume
from midiffusion.metrics import intensity_bound_corr, pearson_correlation
from midiffusion.phantom import PhantomSettings, simulate_subject
from midiffusion.intensity import normalise

TARGET, SOURCES = "T1w", ("T2w", "PDw")


def subject_row(run: Path, subject: str, anatomy_maps: Path | None = None, seed: int = 0) -> dict[str, float]:
    """The correlations of one test subject of `run` (module docstring)."""
    folder = run / f"results/preprocessed/sub-{subject}"
    reference, mask = volumes = [load_volume(folder / name) for name in (f"{TARGET}_norm.nii.gz", "brainmask.nii.gz")]
    check_same_grid(volumes)
    brain = mask.data > 0

    def simulate(**switches):
        return simulate_subject(subject, voxel_mm=float(reference.voxel_mm.mean()), target=TARGET, sources=SOURCES,
                                seed=seed, misalign=False, bias=False, noise=False, anatomy_maps=anatomy_maps,
                                **switches).images

    clean = simulate()
    untextured = simulate(settings=dataclasses.replace(PhantomSettings(), texture=0.0))
    if clean[TARGET].shape != reference.data.shape:
        raise InputError(f"{reference.path}: grid {reference.data.shape} is not the phantom's {clean[TARGET].shape}: "
                         "another seed, voxel size or anatomy?")

    def corr(image: np.ndarray) -> float:
        return pearson_correlation(image[brain], reference.data[brain])

    row = {"perfect_translation": corr(clean[TARGET]),
           "anatomy_and_tissues": corr(untextured[TARGET])}
    for source in SOURCES:
        row[f"clean_{source}_map"] = intensity_bound_corr(normalise(clean[source], brain), reference.data, brain)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a phantom run folder (its results/ are read)")
    parser.add_argument("--anatomy-maps", type=Path, help="the held-out anatomy's tissue maps (the run's results/anatomy)")
    parser.add_argument("--seed", type=int, default=0, help="the cohort's phantom.seed")
    parser.add_argument("--out-csv", type=Path, required=True)
    parser.add_argument("--out-md", type=Path, required=True)
    args = parser.parse_args()
    metrics = pd.read_csv(args.run / "results/tables/metrics_long.csv", dtype={"subject": str})
    reached = metrics[(metrics["method"] == "midiffusion") & (metrics["metric"] == "corr")]
    reached = reached.pivot_table(index=["anatomy", "subject"], columns="source", values="value")
    rows = []
    for anatomy, subject in sorted(reached.index, key=lambda key: (key[0] != TRAINING_ANATOMY, key)):
        held_out = anatomy != TRAINING_ANATOMY
        if held_out and args.anatomy_maps is None:
            parser.error(f"subject {subject} has the held-out anatomy {anatomy}: give --anatomy-maps")
        maps = args.anatomy_maps if held_out else None
        rows.append({"anatomy": anatomy, "subject": subject, **subject_row(args.run, subject, maps, args.seed),
                     **{f"midiffusion_{s}": reached.loc[(anatomy, subject), s] for s in SOURCES}})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    means = table.drop(columns="subject").groupby("anatomy", sort=False).mean().reset_index()
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(means.to_markdown(index=False, floatfmt=".3f") + "\n")
    print(means.to_string(index=False))


if __name__ == "__main__":
    main()
