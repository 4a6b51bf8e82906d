"""Where one subject's preprocessing time goes, to know which part to make cheaper:
preprocess.preprocess_subject, as the workflow's `preprocess` rule runs it (one ITK thread), under cProfile on a phantom subject of a run,
split into its parts: N4 (every contrast), brain extraction (the SyN registration of the reference
head, then warping its brain and tissue maps), the rigid registration of each source, the tissue
labels, the phantom's registration-error QC, and the rest (reading, normalising, writing).
Writes results/benchmarks/preprocess_profile.csv (--append: after the rows already there).

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 .venv/bin/python tools/benchmarks/profile_preprocess.py \
        --cohort results/cohort --subject 01
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

import pandas as pd

from midiffusion.layout import bids_image
from midiffusion.preprocess import SubjectImages, preprocess_subject
from profile_training import cumulative_seconds, current_load, itk_threads, machine_description, write_benchmark

# part -> (file suffix, function name) whose cumulative time is that part
PARTS = {
    "N4 bias correction": ("midiffusion/preprocess.py", "n4"),
    "brain extraction (SyN to the reference head, warped brain and tissue maps)": (
        "midiffusion/preprocess.py", "extract_brain"),
    "rigid registration of the sources": ("midiffusion/preprocess.py", "_register"),
    "tissue labels": ("midiffusion/preprocess.py", "tissue_labels"),
    "registration error (phantom QC)": ("midiffusion/preprocess.py", "registration_error_mm"),
}


def profile(inputs: SubjectImages) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        preprocess_subject(inputs, Path(tmp))
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = cumulative_seconds(stats, "midiffusion/preprocess.py", "preprocess_subject")
    parts = {part: cumulative_seconds(stats, *where) for part, where in PARTS.items()}
    parts["rest (read, normalise, write)"] = total - sum(parts.values())
    rows = [{"part": part, "seconds": round(s, 1), "share": round(s / total, 3)} for part, s in parts.items()]
    return pd.DataFrame(rows + [{"part": "total", "seconds": round(total, 1), "share": 1.0}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=Path("results/cohort"))
    parser.add_argument("--subject", default="01")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/preprocess_profile.csv"))
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out")
    args = parser.parse_args()
    inputs = SubjectImages(
        subject=args.subject, target="T1w",
        images={c: bids_image(args.cohort, args.subject, c) for c in ("T1w", "PDw", "T2w")},
        labels=bids_image(args.cohort, args.subject, "dseg"),
        misalignment=bids_image(args.cohort, args.subject, "misalignment", ".json"),
    )
    table = profile(inputs)
    table.insert(0, "subject", args.subject)
    write_benchmark(table, args.out, machine_description(current_load(), itk_threads()), append=args.append)


if __name__ == "__main__":
    main()
