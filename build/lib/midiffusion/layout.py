"""Facts about the data that many modules share, each stated once: tissue labels, the background
value of normalised images, and where files lie (BIDS-like images, nnU-Net models). No heavy imports."""

from __future__ import annotations

from pathlib import Path

TISSUE_LABELS: dict[str, int] = {"CSF": 1, "GM": 2, "WM": 3}  # 0 is background
TISSUE_CLASSES: dict[int, str] = {value: name for name, value in TISSUE_LABELS.items()}
BACKGROUND = -1.0  # normalised images are in [-1, 1]; outside the brain they hold this value


def bids_image(root: str | Path, subject: str, suffix: str, extension: str = ".nii.gz") -> Path:
    """A subject's file in the BIDS-like layout the phantom writes: sub-<id>/anat/sub-<id>_<suffix><extension>.
    suffix: a contrast (T1w, FLAIR, ...), dseg (labels) or misalignment (the phantom's truth, .json)."""
    return Path(root) / f"sub-{subject}" / "anat" / f"sub-{subject}_{suffix}{extension}"


def nnunet_model_dir(results: str | Path, dataset: str, trainer: str, configuration: str) -> Path:
    """nnU-Net's folder of one trained model: <nnUNet_results>/<dataset>/<trainer>__nnUNetPlans__<configuration>."""
    return Path(results) / dataset / f"{trainer}__nnUNetPlans__{configuration}"
