"""Cheaper brain extraction, measured: preprocess.extract_brain under other ants.registration
settings on the N4-corrected target image of phantom subjects, each against the first variant's mask and,
through the tissue labels it feeds (preprocess.tissue_labels, what real data without labels gets),
against the phantom's true labels. Brain extraction is 78 % of a subject's preprocessing
(results/benchmarks/preprocess_profile.csv). Writes results/benchmarks/brain_extraction.csv (with
--append, adds its rows to the file's).

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 .venv/bin/python tools/benchmarks/benchmark_brain_extraction.py \
        --cohort results/cohort --subjects 01 colin01
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from midiffusion.io import load_volume
from midiffusion.layout import bids_image
from midiffusion.metrics import dice_per_class
from midiffusion.preprocess import BRAIN_EXTRACTION_SYN, to_ants, extract_brain, n4, tissue_labels
from profile_training import current_load, itk_threads, machine_description, write_benchmark

# The default until 2026-12-03 (CC radius 2), the base of the cheaper variants measured against it.
# ants.registration ignores aff_iterations for type SyN (its affine stage is fixed), so the
# "affine stage" row repeats the radius-2 default: its differences are the metric's random sampling.
RADIUS_2 = {**BRAIN_EXTRACTION_SYN, "syn_sampling": 2}
SHORT_AFFINE = {**RADIUS_2, "aff_iterations": (200, 200, 100, 0)}
VARIANTS = {
    "SyN CC radius 2, 40-20-10 (default until 2026-12-03)": RADIUS_2,
    "default (SyN CC radius 1, 40-20-10)": BRAIN_EXTRACTION_SYN,
    "affine stage 200-200-100-0": SHORT_AFFINE,
    "affine 200-200-100-0, SyN 20-10-5": {**SHORT_AFFINE, "reg_iterations": (20, 10, 5)},
    "affine 200-200-100-0, SyN Mattes": {**SHORT_AFFINE, "syn_metric": "mattes", "syn_sampling": 32},
    "affine only": {"type_of_transform": "Affine"},
    "SyN CC radius 2, 40-20-0 (no full-resolution level)": {**RADIUS_2, "reg_iterations": (40, 20, 0)},
    "SyN CC radius 1, 40-20-0": {**BRAIN_EXTRACTION_SYN, "reg_iterations": (40, 20, 0)},
}


def measure(cohort: Path, subject: str, variants: list[str]) -> pd.DataFrame:
    volume = load_volume(bids_image(cohort, subject, "T1w"), canonical=True)
    truth = load_volume(bids_image(cohort, subject, "dseg"), canonical=True).data
    target = n4(to_ants(volume.data, volume.affine))
    rows, default_mask = [], None
    for variant in variants:
        settings = VARIANTS[variant]
        start = time.perf_counter()
        brain = extract_brain(target, "T1w", float(volume.voxel_mm.mean()), settings)
        seconds = time.perf_counter() - start
        default_mask = brain.mask if default_mask is None else default_mask
        overlap = 2 * (brain.mask & default_mask).sum() / (brain.mask.sum() + default_mask.sum())
        labels = dice_per_class(tissue_labels(target.numpy(), brain.mask, brain.tissue_priors), truth)
        rows.append({"subject": subject, "variant": variant, "seconds": round(seconds, 1),
                     "mask_dice_vs_default": round(float(overlap), 4),
                     **{f"label_dice_{k}": round(v, 3) for k, v in labels.items()}})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=Path("results/cohort"))
    parser.add_argument("--subjects", nargs="+", default=["01"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="the settings to measure; the first is the reference of mask_dice_vs_default")
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/brain_extraction.csv"))
    args = parser.parse_args()
    table = pd.concat([measure(args.cohort, subject, args.variants) for subject in args.subjects], ignore_index=True)
    write_benchmark(table, args.out, machine_description(current_load(), itk_threads()),
                    append=args.append)


if __name__ == "__main__":
    main()
