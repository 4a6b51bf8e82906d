"""Dice of nnU-Net trainers at more than one training budget, on a finished default run's test subjects.

The verdict compares every segmenter at one budget (the workflow's trainer, e.g. the quick schedule).
Domain randomisation learns slowly (SynthSeg trains for hundreds of thousands of iterations), so this
asks what a longer budget buys: each trainer named (any `-tr` name nnU-Net finds, e.g.
nnUNetTrainerDomainRand_midiffusion_long) is trained on the run's target nnU-Net dataset unless it
already is, then segments every test subject's normalised images of every contrast directly (the
target's own images too: how well the model segments the contrast it was built for). Test subjects are
the run's (results/cohort/split.json). Prediction without mirroring, as the
workflow's default. Writes one row per trainer, subject and contrast (Dice per class) to --out, and
the mean per trainer and contrast beside it as Markdown (--out with .md).
Usage: python tools/studies/segmenter_budget.py --trainers NAME [NAME ...] [--root results/nnunet]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from midiffusion.cohort import read_split
from midiffusion.io import atomic_path, load_volume, read_json
from midiffusion.layout import NNUNET_ROOT, PREPROCESSED_DIR, SPLIT_FILE, TISSUE_LABELS, nnunet_checkpoint
from midiffusion.metrics import dice_per_class
from midiffusion.segment import NnunetDirs, model_folder, segment_volumes, train

TRAINERS = "midiffusion.nnunet_trainers.nnUNetTrainer_midiffusion"


def batches(trainer: str) -> str:
    """epochs x iterations x batch size of one of this project's trainers ('' for nnU-Net's own)."""
    cls = getattr(importlib.import_module(TRAINERS), trainer, None)
    return f"{cls.epochs} x {cls.iterations} x {cls.max_batch_size}" if cls else ""


def summary(table: pd.DataFrame) -> str:
    """Mean Dice per trainer, budget and contrast, as a Markdown table."""
    columns = [c for c in table.columns if c.startswith("dice_")]
    means = table.groupby(["trainer", "budget", "contrast"], sort=False)[columns].mean().round(3).reset_index()
    return means.rename(columns=lambda c: c.replace("dice_", "Dice ")).to_markdown(index=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", nargs="+", required=True)
    parser.add_argument("--root", type=Path, default=NNUNET_ROOT)
    parser.add_argument("--dataset-id", type=int, default=501)
    parser.add_argument("--preprocessed", type=Path, default=PREPROCESSED_DIR)
    parser.add_argument("--split", type=Path, default=SPLIT_FILE)
    parser.add_argument("--contrasts", nargs="+", default=["T1w", "T2w", "PDw"])
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/tables/segmenter_budget.csv"))
    args = parser.parse_args()
    dirs = NnunetDirs(args.root)
    subjects = [f"sub-{s}" for s in read_split(args.split)["test"]]
    rows = []
    for trainer in args.trainers:
        checkpoint = nnunet_checkpoint(model_folder(dirs, args.dataset_id, "2d", trainer))
        train_s = None
        if not checkpoint.exists():
            start = time.perf_counter()
            train(dirs, args.dataset_id, "2d", trainer, device="cpu", num_processes=args.num_processes)
            train_s = round(time.perf_counter() - start)
        cases = [(s, c) for s in subjects for c in args.contrasts]
        with tempfile.TemporaryDirectory(prefix="segmenter_budget.") as tmp:
            pairs = [(args.preprocessed / s / f"{c}_norm.nii.gz", Path(tmp) / f"{s}_{c}.nii.gz") for s, c in cases]
            segment_volumes(dirs, args.dataset_id, pairs, trainer=trainer, device="cpu",
                            num_processes=args.num_processes, mirroring=False)
            for (subject, contrast), (_, segmentation) in zip(cases, pairs):
                truth = load_volume(args.preprocessed / subject / "labels.nii.gz").data
                dice = dice_per_class(load_volume(segmentation).data, truth)
                rows.append({"trainer": trainer, "budget": batches(trainer), "train_s": train_s,
                             "subject": subject, "contrast": contrast,
                             **{f"dice_{name}": round(dice[name], 4) for name in [*TISSUE_LABELS, "mean"]}})
        print(pd.DataFrame(rows).query("trainer == @trainer").groupby("contrast").mean(numeric_only=True), flush=True)
    table = pd.DataFrame(rows).assign(date=datetime.date.today().isoformat(), machine=f"{os.cpu_count()} cpus")
    with atomic_path(args.out) as tmp_path:
        table.to_csv(tmp_path, index=False)
    with atomic_path(args.out.with_suffix(".md")) as tmp_path:
        tmp_path.write_text(summary(table))


if __name__ == "__main__":
    main()
