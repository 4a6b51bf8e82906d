"""Whether a phantom source contrast leaves a translation anything to do beyond an intensity map, per
voxel size: no run needed, the simulator alone.

A translation earns its keep where no intensity map of the source follows the target. For each source
rendered with the target (one subject, noise on, no bias field, no misalignment: what preprocessing
leaves), this measures Pearson's r with the noise-free target T1w of:
- `as_is`: the source itself (what `none` feeds the segmenter);
- `increasing` / `decreasing`: the best monotone map of the source (isotonic regression of the target's
  mean on the source's intensity bins), the best an `atlas_map`- or `invert`-like map can do;
- `any_map`: the best map of any shape (the conditional mean, as metrics.intensity_bound_corr), which
  reads the target;
each over the whole brain (`brain_*`, where CSF against tissue dominates) and over GM and WM alone
(`tissue_*`, where the GM/WM order decides); and the intensity bound (metrics.intensity_bound_dice, mean
over CSF, GM, WM) of the source and of the target. A source needs more than a monotone map where the
best monotone map of the whole brain and that of GM/WM go opposite ways. `--voxel-mm` renders the template
anatomy; `--anatomy-maps` adds held-out anatomies (`midiffusion anatomy --voxel-mm V --out FILE`), each at
its file's voxel size.

    .venv/bin/python tools/studies/source_monotonicity.py --voxel-mm 2 1 \
        --anatomy-maps colin27_2mm.nii.gz \
        --out-csv results/tables/source_monotonicity.csv --out-md results/tables/source_monotonicity.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.baselines import binned_means, intensity_bins
from midiffusion.io import InputError, atomic_path
from midiffusion.intensity import normalise
from midiffusion.layout import TISSUE_LABELS
from midiffusion.metrics import intensity_bound_dice, pearson_correlation
from midiffusion.head import PROTOCOLS
from midiffusion.phantom import simulate_subject

TARGET = "T1w"
SOURCES = tuple(c for c in PROTOCOLS if c != TARGET)  # every contrast the phantom renders
BINS = 64


def map_corrs(source: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """r with `reference` of `source` itself and of its best increasing, decreasing and unconstrained
    map (voxel arrays, source in [-1, 1]): fits, weighted by voxel count, of the reference's mean in each
    source bin. A monotone map fitted as a constant (the reference does not move that way) counts 0."""
    index = intensity_bins(source, BINS)
    counts, (means,) = binned_means(index, BINS, reference)
    used = counts > 0

    def corr(fitted_bins: np.ndarray) -> float:
        mapped = np.zeros(BINS)
        mapped[used] = fitted_bins
        mapped = mapped[index]
        return pearson_correlation(mapped, reference) if np.ptp(mapped) > 0 else 0.0

    return {
        "as_is": pearson_correlation(source, reference),
        **{name: corr(isotonic_regression(means[used], weights=counts[used], increasing=up).x)
           for name, up in (("increasing", True), ("decreasing", False))},
        "any_map": corr(means[used]),
    }


def subject_rows(subject: str, voxel_mm: float, seed: int, anatomy_maps: Path | None) -> list[dict]:
    """One row per source of one simulated subject (module docstring)."""
    render = dict(voxel_mm=voxel_mm, target=TARGET, sources=SOURCES, seed=seed, misalign=False, bias=False,
                  anatomy_maps=anatomy_maps)
    noisy = simulate_subject(subject, **render)
    clean = simulate_subject(subject, noise=False, **render).images[TARGET]
    mask = noisy.anatomy.brain >= 0.5
    labels = noisy.anatomy.labels
    regions = {"brain": mask, "tissue": mask & np.isin(labels, [TISSUE_LABELS["GM"], TISSUE_LABELS["WM"]])}
    reference = normalise(clean, mask).astype(np.float64)
    target_bound = intensity_bound_dice(normalise(noisy.images[TARGET], mask), labels, mask)["mean"]
    rows = []
    for source in SOURCES:
        image = normalise(noisy.images[source], mask).astype(np.float64)
        row = {"anatomy": anatomy_maps.stem.split("_")[0] if anatomy_maps else TRAINING_ANATOMY,
               "voxel_mm": voxel_mm, "subject": subject, "source": source}
        for region, inside in regions.items():
            row |= {f"{region}_{name}": r for name, r in map_corrs(image[inside], reference[inside]).items()}
        row |= {"dice_bound": intensity_bound_dice(image, labels, mask)["mean"], "dice_bound_target": target_bound}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voxel-mm", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--subject", default="01")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anatomy-maps", type=Path, nargs="*", default=[],
                        help="held-out anatomies' tissue maps (midiffusion anatomy), each rendered at its own voxel size")
    parser.add_argument("--out-csv", type=Path, required=True)
    parser.add_argument("--out-md", type=Path, required=True)
    args = parser.parse_args()
    for path in args.anatomy_maps:
        if not path.is_file():
            raise SystemExit(f"{path}: not found (midiffusion anatomy --voxel-mm V --out {path})")
    renders = [(voxel_mm, None) for voxel_mm in args.voxel_mm]
    renders += [(float(nib.load(path).header.get_zooms()[0]), path) for path in args.anatomy_maps]
    rows = []
    for voxel_mm, maps in renders:
        rows += subject_rows(args.subject, voxel_mm, args.seed, maps)
        print(pd.DataFrame(rows[-len(SOURCES):]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(table.drop(columns="subject").to_markdown(index=False, floatfmt=".3f") + "\n")
    print(f"wrote {args.out_csv} and {args.out_md}")


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
