"""Seconds per epoch of the target's quick nnU-Net trainer and of its contrast-agnostic rivals (DA5,
DomainRand), on one small phantom dataset, on the CPU: the rivals' augmentation must not make their equal
schedule cost more than the target's.

Builds `--subjects` phantom subjects at 2 mm, exports their normalised T1w ([-1, 1] in the brain, -1
outside, as the workflow's preprocessing gives) and labels, plans and preprocesses (2d) as the workflow
does, then trains each trainer for `--epochs` epochs in this process (the quick schedule, only fewer
epochs) with `--threads` torch threads, once per count of augmentation workers in `--workers` (0:
augmentation in the training process, the default's `nnunet.augmentation_processes`; the counts
alternate per trainer, so a drifting machine hits them alike), and reads nnU-Net's own epoch times
(training and validation batches; checkpoints and plots are outside them). Workers run beside the
training, so the notes also give the loader's own cost of one batch (loading and augmentation, in this
process). Appends one row per trainer and worker count to results/benchmarks/trainers.csv.
Usage: python tools/benchmarks/benchmark_trainers.py [--subjects 5] [--epochs 2] [--threads 2] [--workers 0 2]
       [--out CSV]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from midiffusion.config import default
from midiffusion.io import load_volume, save_volume
from midiffusion.methods import trainer_name
from midiffusion.phantom import build_subject, subject_paths
from midiffusion.intensity import normalise
from midiffusion.segment import Case, NnunetDirs, export_training_set, plan_and_preprocess
from profile_training import append_csv_rows, machine_description

TARGET = "nnUNetTrainer_midiffusion_quick"
SEGMENTERS = ["target", "strong_aug", "domain_rand"]  # the target's trainer and its rivals'
COLUMNS = ["date", "machine", "trainer", "epochs_timed", "seconds_per_epoch", "notes"]
LOADER_BATCHES = 20


def phantom_case(folder: Path, subject: str) -> Case:
    """A phantom subject's T1w, normalised like the workflow's, and its labels."""
    build_subject(folder, subject, voxel_mm=2.0, sources=("T2w",))
    paths = subject_paths(folder, subject, ["T1w"])
    image, labels = load_volume(paths["T1w"]), load_volume(paths["dseg"])
    normalised = folder / f"sub-{subject}_T1w_norm.nii.gz"
    save_volume(normalised, normalise(image.data, labels.data > 0), image.affine)
    return Case(f"sub-{subject}", normalised, paths["dseg"])


def time_trainer(name: str, epochs: int) -> tuple[list[float], float, str]:
    """Train `name` for `epochs` epochs; its epoch times (s), the loader's seconds a batch, its setup."""
    from nnunetv2.run.run_training import get_trainer_from_args

    # the trainer as nnUNetv2_train builds it (its -tr lookup included), on dataset 1's 2d plan
    trainer = get_trainer_from_args("1", "2d", "all", name, device=torch.device("cpu"))
    trainer.num_epochs = epochs  # the schedule shortened: nothing else changes
    trainer.run_training()
    starts = trainer.logger.get_value("epoch_start_timestamps", step=None)
    epoch_s = [end - start for start, end in zip(starts, trainer.logger.get_value("epoch_end_timestamps", step=None))]
    augmenter = trainer.dataloader_train  # in-process (data_loader) or with workers (generator)
    loader = getattr(augmenter, "generator", None) or augmenter.data_loader  # its loader, transforms included
    loader.generate_train_batch()  # warm-up: this process has not run the transforms yet
    start = time.perf_counter()
    for _ in range(LOADER_BATCHES):
        loader.generate_train_batch()
    loader_s = (time.perf_counter() - start) / LOADER_BATCHES
    patch = "x".join(map(str, trainer.configuration_manager.patch_size))
    setup = (f"2d patch {patch}, batch {trainer.batch_size}, "
             f"{trainer.num_iterations_per_epoch}+{trainer.num_val_iterations_per_epoch} batches/epoch")
    return epoch_s, loader_s, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[default("nnunet", "augmentation_processes")],
                        help="augmentation worker counts to time (0: in the training process)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/trainers.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_description(f"{args.threads} torch threads")
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark_trainers.") as tmp:
        dirs = NnunetDirs(Path(tmp) / "nnunet")
        # nnU-Net reads some settings at import: set its variables first (its worker count when it starts a loader)
        os.environ.update(dirs.env(num_processes=1))
        cases = [phantom_case(Path(tmp) / "data", f"{i:02d}") for i in range(1, args.subjects + 1)]
        export_training_set(cases, dirs, 1, "T1w")
        plan_and_preprocess(dirs, 1, "2d", num_processes=1)
        for name, workers in ((trainer_name(s, TARGET), w) for s in SEGMENTERS for w in args.workers):
            os.environ.update(dirs.env(num_processes=workers))  # the loader reads its worker count when it starts
            load = os.getloadavg()[0]
            epoch_s, loader_s, setup = time_trainer(name, args.epochs)
            notes = (f"{args.subjects} phantom subjects at 2 mm; {setup}; {workers} augmentation workers; epochs "
                     f"{', '.join(f'{s:.1f}' for s in epoch_s)} s; loader alone {loader_s:.2f} s/batch; "
                     f"load avg {load:.2f} before")
            rows.append({"date": datetime.date.today().isoformat(), "machine": machine, "trainer": name,
                         "epochs_timed": len(epoch_s), "seconds_per_epoch": round(statistics.mean(epoch_s), 1),
                         "notes": notes})
            print(rows[-1], flush=True)
    append_csv_rows(args.out, rows, COLUMNS)


if __name__ == "__main__":
    main()
