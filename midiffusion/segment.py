"""nnU-Net v2 segmentation: export a training set, plan and preprocess, train, predict.

The only module that calls nnU-Net. Every step runs nnU-Net's own command (`nnUNetv2_*`; planning through
`midiffusion.nnunet_plan`, which writes a fresh fingerprint first) in a subprocess whose environment
carries the `nnUNet_*` paths for that call only: nnU-Net reads some
settings once at import (`nnUNet_def_n_proc`), calls `torch.set_num_threads` and starts worker
pools, so a fresh process per step is the only way to keep it from leaking state into the caller,
and it is exactly what a user would run by hand. The project's short trainers live in
`midiffusion/nnunet_trainers/` and are found by nnU-Net's `-tr NAME` lookup through
`nnUNet_extTrainer` (supported by nnunetv2 >= 2.8: it searches that folder when NAME is not one of
nnU-Net's own trainers, in training and in inference alike).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from midiffusion.io import InputError, atomic_path, check_same_grid, load_volume, save_volume, write_json
from midiffusion.layout import (
    BACKGROUND, NNUNET_CHECKPOINT, NNUNET_INTENSITIES, NNUNET_INTENSITIES_KEY, NNUNET_LATEST_CHECKPOINT, NNUNET_PLANS,
    TISSUE_LABELS, check_nnunet_intensities, dataset_name, dataset_prefix, nnunet_checkpoint, nnunet_model_dir,
)
from midiffusion.diffusion.model import select_device

TRAINERS_DIR = Path(__file__).with_name("nnunet_trainers")
LABELS = {"background": 0, **TISSUE_LABELS}
FILE_ENDING = ".nii.gz"
OUTPUT_TAIL_LINES = 40
# how train() hands its seed to the project's trainers (nnunet_trainers/), which nnU-Net builds itself
SEED_VARIABLE = "nnUNet_midiffusion_seed"

Device = Literal["auto", "cpu", "cuda", "mps"]
Fold = int | Literal["all"]


@dataclass(frozen=True)
class NnunetDirs:
    """nnU-Net's three folders, kept together under one root inside the results tree."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # accept str from the CLI

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    def env(self, num_processes: int = 2) -> dict[str, str]:
        """The environment variables nnU-Net needs for one call (to be merged into os.environ's copy)."""
        if num_processes < 0:
            raise InputError(f"num_processes: must be >= 0, got {num_processes}")
        return {
            "nnUNet_raw": str(self.raw.resolve()),
            "nnUNet_preprocessed": str(self.preprocessed.resolve()),
            "nnUNet_results": str(self.results.resolve()),
            "nnUNet_extTrainer": str(TRAINERS_DIR),
            # worker pools for preprocessing/export and for data augmentation; nnU-Net's defaults
            # (8 and 12) would swamp a small machine. 0 augmentation workers = in-process loading.
            "nnUNet_def_n_proc": str(max(num_processes, 1)),
            "nnUNet_n_proc_DA": str(num_processes),
        }


@dataclass(frozen=True)
class Case:
    """One training case: a normalised image and its label map (0..3) on the same grid."""

    case_id: str
    image: Path
    label: Path


def export_training_set(
    cases: list[Case], dirs: NnunetDirs, dataset_id: int, name: str, channel_name: str = "MRI"
) -> Path:
    """Write the cases as nnU-Net raw dataset nnUNet_raw/Dataset<id>_<name>; return that folder.

    imagesTr/<case>_0000.nii.gz (float32), labelsTr/<case>.nii.gz (uint8 0..3) and dataset.json.
    `channel_name` picks nnU-Net's normalisation: anything but "CT"/"noNorm"/... is z-scored.
    The folder is built aside and swapped in whole, so a rerun never mixes old and new cases.
    """
    _check_case_ids([case.case_id for case in cases], "cases")
    target = dirs.raw / dataset_name(dataset_id, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        staging = Path(tmp) / target.name
        for case in cases:
            _export_case(case, staging)
        write_json(
            staging / "dataset.json",
            {
                "name": name,
                "channel_names": {"0": channel_name},
                "labels": LABELS,
                "numTraining": len(cases),
                "file_ending": FILE_ENDING,
                NNUNET_INTENSITIES_KEY: NNUNET_INTENSITIES,
            },
        )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def plan_and_preprocess(
    dirs: NnunetDirs, dataset_id: int, configuration: str = "2d", num_processes: int = 2
) -> Path:
    """nnU-Net's dataset integrity check, fingerprint (always afresh: see midiffusion/nnunet_plan.py),
    experiment planning and preprocessing.

    Returns the dataset's preprocessed folder (holding NNUNET_PLANS).
    """
    # at least one process: nnU-Net's planner sets torch's threads to its augmentation worker count
    n = max(num_processes, 1)
    # -P: this environment's midiffusion, never one in the working directory
    command = [sys.executable, "-P", "-m", "midiffusion.nnunet_plan", "-d", str(dataset_id), "-np", str(n)]
    _run_nnunet([*command, "-c", configuration, "--no_pbar"], dirs, n)
    return dirs.preprocessed / _find_dataset(dirs, dataset_id)


def train(
    dirs: NnunetDirs,
    dataset_id: int,
    configuration: str = "2d",
    trainer: str = "nnUNetTrainer",
    fold: Fold = "all",
    device: Device = "auto",
    num_processes: int = 0,
    seed: int | None = 0,
) -> Path:
    """Train with nnUNetv2_train; return the path of the final checkpoint.

    `num_processes` data-augmentation workers (0 = augment in the training process). `seed` seeds this
    project's trainers (network initialisation, batch sampling, augmentation; None: unseeded): with
    augmentation in the training process a training repeats exactly on the same machine, where workers
    would hand back their batches in whatever order they finish. A resumed training is not reseeded.
    `trainer` is any name nnU-Net's `-tr` lookup finds: its own (nnUNetTrainer, the paper's 1000
    epochs; nnUNetTrainer_5epochs, ...) or this project's (nnUNetTrainer_midiffusion_ci,
    nnUNetTrainer_midiffusion_quick). An interrupted training resumes from its latest checkpoint
    (nnU-Net's --c) when that checkpoint is newer than the plans: new plans (new data) start afresh.
    """
    checkpoint = nnunet_checkpoint(model_folder(dirs, dataset_id, configuration, trainer), fold)
    latest = checkpoint.with_name(NNUNET_LATEST_CHECKPOINT)
    plans = dirs.preprocessed / _find_dataset(dirs, dataset_id) / NNUNET_PLANS
    resume = latest.exists() and plans.exists() and latest.stat().st_mtime > plans.stat().st_mtime
    if resume:
        print(f"resuming from {latest}", flush=True)
    _run_nnunet(
        [_nnunet_command("nnUNetv2_train"), str(dataset_id), configuration, str(fold), "-tr", trainer,
         "-device", resolve_device(device)] + (["--c"] if resume else []),
        dirs,
        num_processes,
        {} if seed is None else {SEED_VARIABLE: str(seed)},
    )
    if not checkpoint.exists():
        raise RuntimeError(f"nnUNetv2_train finished but wrote no {checkpoint}")
    return checkpoint


# nnU-Net's per-epoch log in a checkpoint (its "logging" entry): our column -> its key. With fold "all" the
# validation cases are the training cases, seen without augmentation: the pseudo Dice is the fit to them.
CURVE_KEYS = {"train_loss": "train_losses", "val_loss": "val_losses", "pseudo_dice": "mean_fg_dice",
              "ema_pseudo_dice": "ema_fg_dice"}


def training_curve(checkpoint: Path, out_csv: Path) -> Path:
    """The per-epoch training log an nnU-Net checkpoint keeps -> CSV (epoch and CURVE_KEYS' columns)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # the run's own file: numpy scalars
    log = state.get("logging") if isinstance(state, dict) else None
    if not log or any(key not in log for key in CURVE_KEYS.values()):
        raise InputError(f"{checkpoint}: no nnU-Net training log (expected the keys {sorted(CURVE_KEYS.values())})")
    epochs = len(log["mean_fg_dice"])
    lines = ["epoch," + ",".join(CURVE_KEYS)]
    lines += [f"{epoch}," + ",".join(f"{float(log[key][epoch]):.6g}" for key in CURVE_KEYS.values())
              for epoch in range(epochs)]
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_csv) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out_csv


def predict(
    dirs: NnunetDirs,
    dataset_id: int,
    inputs: dict[str, Path],
    out_dir: Path,
    configuration: str = "2d",
    trainer: str = "nnUNetTrainer",
    fold: Fold = "all",
    device: Device = "auto",
    num_processes: int = 2,
    mirroring: bool = True,
) -> dict[str, Path]:
    """Segment volumes (case id -> image path, any file naming) into out_dir/<case>.nii.gz.

    Uses the trained model's checkpoint_final.pth. The images are written, on nnunet_intensities, into a
    temporary input folder under nnU-Net's naming (<case>_0000.nii.gz); the predictions are checked to have
    their input's shape and affine and only then moved into out_dir, so no half-finished set is left.
    `num_processes=0` runs nnU-Net's sequential mode (no worker processes); `mirroring=False`
    turns off test-time mirroring (4x fewer forward passes in 2d: worth it on a CPU).
    Returns case id -> segmentation path (uint8 labels 0..3).
    """
    _check_case_ids(list(inputs), "inputs")
    checkpoint = nnunet_checkpoint(model_folder(dirs, dataset_id, configuration, trainer), fold)
    if not checkpoint.exists():
        raise InputError(f"{checkpoint}: no trained nnU-Net model (run train first)")
    check_nnunet_intensities(checkpoint.parent.parent, dirs.root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".nnunet_predict.") as tmp:
        in_folder, pred_folder = Path(tmp) / "in", Path(tmp) / "out"
        in_folder.mkdir()
        grids = {
            case_id: _stage_input(Path(path), in_folder / f"{case_id}_0000{FILE_ENDING}")
            for case_id, path in inputs.items()
        }
        # -npp 0 -nps 0 is nnU-Net's sequential mode: no worker processes at all
        n = str(num_processes)
        command = [_nnunet_command("nnUNetv2_predict"), "-i", str(in_folder), "-o", str(pred_folder)]
        command += ["-d", str(dataset_id), "-c", configuration, "-tr", trainer, "-f", str(fold)]
        command += ["-chk", NNUNET_CHECKPOINT, "-npp", n, "-nps", n, "-device", resolve_device(device)]
        command += ["--disable_progress_bar"] + ([] if mirroring else ["--disable_tta"])
        _run_nnunet(command, dirs, num_processes)
        outputs = {case_id: out_dir / f"{case_id}{FILE_ENDING}" for case_id in inputs}
        for case_id, grid in grids.items():
            prediction = pred_folder / f"{case_id}{FILE_ENDING}"
            _check_prediction(prediction, grid)
            os.replace(prediction, outputs[case_id])
    return outputs


def segment_volumes(dirs: NnunetDirs, dataset_id: int, pairs: list[tuple[Path, Path]], **predict_kwargs) -> list[Path]:
    """Segment each (image, output path) pair in one nnU-Net run: the model is loaded once.

    Outputs may lie in different folders (e.g. one per method); predict_kwargs go to predict().
    """
    outputs = [Path(output) for _, output in pairs]
    staging = Path(os.path.commonpath([output.parent.resolve() for output in outputs]))
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging, prefix=".segment.") as tmp:
        inputs = {f"case{i:04d}": Path(image) for i, (image, _) in enumerate(pairs)}
        predictions = predict(dirs, dataset_id, inputs, Path(tmp), **predict_kwargs)
        for prediction, output in zip(predictions.values(), outputs):
            output.parent.mkdir(parents=True, exist_ok=True)
            os.replace(prediction, output)
    return outputs


def model_folder(dirs: NnunetDirs, dataset_id: int, configuration: str, trainer: str) -> Path:
    """nnU-Net's results folder of one trained model (layout.nnunet_model_dir)."""
    return nnunet_model_dir(dirs.results, _find_dataset(dirs, dataset_id), trainer, configuration)


def resolve_device(device: Device) -> str:
    """nnU-Net's -device value: the project's one device choice (model.select_device)."""
    return select_device(device).type


def _export_case(case: Case, folder: Path) -> None:
    image = load_volume(case.image)
    label = load_volume(case.label)
    check_same_grid([image, label])
    bad = np.setdiff1d(np.unique(label.data), list(LABELS.values()))
    if bad.size:
        raise InputError(
            f"{case.label}: label values must be {sorted(LABELS.values())} "
            f"({', '.join(LABELS)}), found {', '.join(f'{v:g}' for v in bad[:10])}"
        )
    save_volume(folder / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}", nnunet_intensities(image.data), image.affine)
    save_volume(folder / "labelsTr" / f"{case.case_id}{FILE_ENDING}", label.data, label.affine, dtype=np.uint8)


@dataclass(frozen=True)
class _Grid:
    """Where an input image lies (its voxel data is not kept: a prediction set can be large)."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray


def nnunet_intensities(data: np.ndarray) -> np.ndarray:
    """An image as nnU-Net gets it, for training and prediction alike: shifted so that BACKGROUND is 0.

    nnU-Net crops every case to the box of its non-zero voxels and z-scores inside them (a shift changes
    nothing else). On the project's normalised images (BACKGROUND outside the brain) it so trains and
    predicts on the brain's box, not on a volume 80 % background: on the 2 mm phantom 0.44 x the voxels
    (docs/hardware.md). A brain voxel at exactly BACKGROUND (the darkest 0.5 %) on the brain's edge falls
    outside the mask nnU-Net z-scores in, and is read as 0 there."""
    return np.asarray(data, dtype=np.float32) - np.float32(BACKGROUND)


def _stage_input(source: Path, path: Path) -> _Grid:
    """Check the image; write it under nnU-Net's name, on nnU-Net's intensities."""
    volume = load_volume(source)  # InputError naming the file if it is missing, not 3-D or not finite
    save_volume(path, nnunet_intensities(volume.data), volume.affine)
    return _Grid(source, volume.data.shape, volume.affine)


def _check_prediction(prediction: Path, source: _Grid) -> None:
    if not prediction.exists():
        raise RuntimeError(f"nnUNetv2_predict wrote no {prediction.name} for {source.path}")
    result = load_volume(prediction)
    if result.data.shape != source.shape or not np.allclose(result.affine, source.affine, atol=1e-3):
        raise RuntimeError(
            f"{source.path}: nnU-Net's segmentation {prediction.name} does not lie on the input grid "
            f"(shape {result.data.shape} vs {source.shape}, or a different affine)"
        )


def _check_case_ids(case_ids: list[str], what: str) -> None:
    if not case_ids:
        raise InputError(f"{what}: no cases given")
    for case_id in case_ids:
        # nnU-Net finds a case's files by name, so ids must be plain file-name stems
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", case_id):
            raise InputError(f"{what}: case id {case_id!r} must be letters, digits, '_', '.', '-'")
    duplicates = sorted(c for c, n in collections.Counter(case_ids).items() if n > 1)
    if duplicates:
        raise InputError(f"{what}: duplicate case ids {duplicates}")


def _find_dataset(dirs: NnunetDirs, dataset_id: int) -> str:
    """The Dataset<id>_<name> folder name, looked up like nnU-Net does: raw, preprocessed, results."""
    prefix = dataset_prefix(dataset_id)
    names = {
        folder.name
        for base in (dirs.raw, dirs.preprocessed, dirs.results)
        if base.is_dir()
        for folder in base.iterdir()
        if folder.is_dir() and folder.name.startswith(prefix)
    }
    if len(names) != 1:
        found = f"several ({sorted(names)})" if names else "none"
        raise InputError(f"{dirs.root}: expected one nnU-Net dataset {prefix}*, found {found}")
    return names.pop()


def _nnunet_command(name: str) -> str:
    """nnU-Net's console script from this interpreter's environment (PATH may not include it)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name}: nnU-Net command not found next to {sys.executable} or on PATH")
    return found


def _run_nnunet(command: list[str], dirs: NnunetDirs, num_processes: int, extra_env: dict[str, str] | None = None) -> None:
    """Run one nnU-Net command line, echoing its output; RuntimeError with the output's tail on failure."""
    env = {**os.environ, **dirs.env(num_processes), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            # echoed so that a rule's log shows nnU-Net's progress while a long training runs
            sys.stdout.write(line)
            tail.append(line.rstrip())
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join([Path(command[0]).name, *command[1:]])} failed (exit code {process.returncode}); "
            "last output:\n" + "\n".join(tail)
        )
