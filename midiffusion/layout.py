"""Facts about the data and the run folder that many modules share, each stated once: tissue labels,
the background value of normalised images, where files lie (BIDS-like images, the run's folders,
nnU-Net's datasets and models). No heavy imports: the workflow reads it when it parses."""

from __future__ import annotations

import re
from pathlib import Path

from .io import InputError, read_json

TISSUE_LABELS: dict[str, int] = {"CSF": 1, "GM": 2, "WM": 3}  # 0 is background
TISSUE_CLASSES: dict[int, str] = {value: name for name, value in TISSUE_LABELS.items()}
BACKGROUND = -1.0  # normalised images are in [-1, 1]; outside the brain they hold this value

# The run folder (relative to the workflow's working directory).
RESULTS = Path("results")
COHORT_DIR = RESULTS / "cohort"  # the phantom's images, image checks, the split
SPLIT_FILE = COHORT_DIR / "split.json"  # cohort.RunCohort as the workflow resolved it
PREPROCESSED_DIR = RESULTS / "preprocessed"  # one sub-<id> folder per subject
NNUNET_ROOT = RESULTS / "nnunet"  # nnUNet_raw, nnUNet_preprocessed, nnUNet_results

# nnU-Net's names.
NNUNET_CHECKPOINT = "checkpoint_final.pth"
NNUNET_PLANS = "nnUNetPlans.json"  # the plans file in a dataset's preprocessed folder
NNUNET_LATEST_CHECKPOINT = "checkpoint_latest.pth"  # written every few epochs: where a killed training resumes
DATASET_ID_STEP = 100  # nnU-Net datasets in one root need distinct ids: the target's, then 100 per source
# Written into dataset.json (nnU-Net copies it beside the model): how the images reached nnU-Net
# (segment.nnunet_intensities), so that data or a model made for other intensities is refused instead of
# segmenting inputs it never learned.
NNUNET_INTENSITIES_KEY, NNUNET_INTENSITIES = "midiffusion_intensities", "normalised + 1: background 0"


def bids_image(root: str | Path, subject: str, suffix: str, extension: str = ".nii.gz") -> Path:
    """A subject's file in the BIDS-like layout the phantom writes: sub-<id>/anat/sub-<id>_<suffix><extension>.
    suffix: a contrast (T1w, FLAIR, ...), dseg (labels) or misalignment (the phantom's truth, .json)."""
    return Path(root) / f"sub-{subject}" / "anat" / f"sub-{subject}_{suffix}{extension}"


def preprocessed_dir(subject: str) -> Path:
    """A subject's preprocessed folder in the run (preprocess.preprocess_subject's out_dir)."""
    return PREPROCESSED_DIR / f"sub-{subject}"


def dataset_prefix(dataset_id: int) -> str:
    """The start of every folder name of nnU-Net dataset `dataset_id` (Dataset001_), how nnU-Net finds it."""
    return f"Dataset{dataset_id:03d}_"


def dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name for a dataset, e.g. Dataset001_T1w."""
    if not 1 <= dataset_id <= 999:
        raise InputError(f"dataset_id: must be in 1..999 (nnU-Net uses three digits), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", name):
        raise InputError(f"dataset name: letters, digits and '-' only, got {name!r}")
    return dataset_prefix(dataset_id) + name


def dataset_ids(target_id: int, contrasts: list[str]) -> dict[str, int]:
    """Each contrast's nnU-Net dataset id: the target's (first) is `target_id`, each source's (trained
    only for the supervised bound) DATASET_ID_STEP above the previous one."""
    ids = {contrast: target_id + DATASET_ID_STEP * k for k, contrast in enumerate(contrasts)}
    if max(ids.values()) > 999:
        raise InputError(
            f"config nnunet.dataset_id: ids {ids} go past 999 (each source contrast takes the id "
            f"{DATASET_ID_STEP} above the previous one); choose a smaller dataset_id"
        )
    return ids


def nnunet_model_dir(results: str | Path, dataset: str, trainer: str, configuration: str) -> Path:
    """nnU-Net's folder of one trained model: <nnUNet_results>/<dataset>/<trainer>__nnUNetPlans__<configuration>."""
    return Path(results) / dataset / f"{trainer}__nnUNetPlans__{configuration}"


def nnunet_checkpoint(model_dir: str | Path, fold: int | str = "all") -> Path:
    """The final checkpoint of one fold's model in its nnunet_model_dir. The workflow trains fold "all"
    (every training case; the test subjects are never among them)."""
    return Path(model_dir) / f"fold_{fold}" / NNUNET_CHECKPOINT


def check_nnunet_intensities(folder: Path, root: Path) -> None:
    """InputError unless the nnU-Net dataset or model in folder records the current intensities in its
    dataset.json; root is the nnU-Net folder the message says to delete."""
    meta = Path(folder) / "dataset.json"
    if not meta.exists() or read_json(meta).get(NNUNET_INTENSITIES_KEY) != NNUNET_INTENSITIES:
        raise InputError(
            f"{folder}: made from images as an earlier midiffusion gave them to nnU-Net (its dataset.json lacks "
            f"{NNUNET_INTENSITIES_KEY}: {NNUNET_INTENSITIES!r}); delete {root} and run again to retrain"
        )


def check_run_nnunet(root: Path = NNUNET_ROOT) -> None:
    """Every nnU-Net dataset and model already in a run's nnU-Net root records the current intensities: a
    resumed run from an earlier version stops when the workflow starts, not at its first prediction."""
    for meta in sorted([*root.glob("nnUNet_raw/*/dataset.json"), *root.glob("nnUNet_results/*/*/dataset.json")]):
        check_nnunet_intensities(meta.parent, root)
