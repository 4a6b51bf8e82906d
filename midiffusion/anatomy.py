"""Held-out anatomy: phantom test subjects whose brain the diffusion model never saw.

Every phantom subject is the ICBM152 2009a template under a smooth warp (phantom.py), so a model
trained on some of them already knows the others' anatomy. A held-out head gives test subjects of
another brain, rendered with the same physics, warps, head shell and noise: Colin27 (Debian package
mricron-data, `ch2.nii.gz`: one adult scanned 27 times and averaged, 1 mm, with skull). The ICBM152
2009c maps do not count: they average the same population as the training anatomy.

Its tissue maps come from the project's own labelling of a real head (preprocess: N4, brain
extraction by the ICBM reference head, tissue_fractions), made once per voxel size and written as a
two-volume NIfTI (GM, WM fractions) that template.load_template reads in place of nilearn's maps
(docs/method.md, "Held-out anatomy").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .io import InputError, Volume, save_volume

TRAINING_ANATOMY = "icbm152_2009a"
# Air added around a held-out head: its field of view hugs the skull, and the phantom's head shell
# (about 14 mm, head.HEAD_LAYERS) must fit around the brain as it does in the ICBM152 box.
PAD_MM = 16


@dataclass(frozen=True)
class HeldOutHead:
    """A real T1w head with skull (any orientation, 1 mm), the prefix of its phantom subjects' ids and
    how to install it."""

    path: Path
    id_prefix: str
    install: str


HELD_OUT_HEADS = {
    "colin27": HeldOutHead(
        Path("/usr/share/mricron/templates/ch2.nii.gz"), "colin", "apt-get install mricron-data (Debian, Ubuntu)"
    ),
}


def held_out_head(anatomy: str) -> HeldOutHead:
    """The head of a held-out anatomy; InputError if the name is unknown or its file is not installed."""
    if anatomy not in HELD_OUT_HEADS:
        raise InputError(f"phantom.held_out_anatomy: unknown anatomy {anatomy!r}, expected one of {sorted(HELD_OUT_HEADS)}")
    head = HELD_OUT_HEADS[anatomy]
    if not head.path.exists():
        raise InputError(
            f"phantom.held_out_anatomy {anatomy}: {head.path} is missing; install it ({head.install}) "
            "or set phantom.n_held_out: 0"
        )
    return head


def held_out_subjects(anatomy: str, n_subjects: int) -> list[str]:
    """Phantom subject ids rendered from a held-out anatomy: its id prefix and a number (colin01, ...)."""
    if n_subjects == 0:
        return []
    prefix = held_out_head(anatomy).id_prefix
    return [f"{prefix}{i:02d}" for i in range(1, n_subjects + 1)]


def subject_anatomies(anatomy: str, held_out: list[str], subjects: list[str]) -> dict[str, str]:
    """The anatomy of each subject: `anatomy` for the held-out ids, the training anatomy for the rest."""
    return {subject: anatomy if subject in held_out else TRAINING_ANATOMY for subject in subjects}


def tissue_maps(anatomy: str, voxel_mm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GM and WM fractions (X, Y, Z) float32 of a held-out head at voxel_mm (RAS), and their affine.

    The 1 mm head, padded with PAD_MM of air, is block-averaged to voxel_mm (as a coarser acquisition
    averages it) and labelled as preprocessing labels a real T1w without label files; the fractions
    are clipped to [0, 1] and rescaled to sum to 1 inside the brain mask (CSF = the rest).
    """
    from .preprocess import correct_and_extract, tissue_fractions  # ANTs: only here
    from .template import block_average

    head = nib.as_closest_canonical(nib.load(str(held_out_head(anatomy).path)))
    padded, affine = _pad(np.asarray(head.dataobj, dtype=np.float32), head.affine, PAD_MM)
    data, affine = block_average(padded, affine, voxel_mm)
    images, extracted = correct_and_extract({"T1w": Volume(data, affine)}, "T1w", float(voxel_mm))
    image = images["T1w"]
    fractions = np.clip(tissue_fractions(image.numpy(), extracted.mask, extracted.tissue_priors), 0.0, 1.0)
    total = fractions.sum(axis=0)
    fractions = np.where(total > 0, fractions / np.maximum(total, 1e-6), 0.0).astype(np.float32)
    return fractions[1], fractions[2], affine


def _pad(data: np.ndarray, affine: np.ndarray, voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeros around the volume, `voxels` on every side, with the affine that keeps every point in place."""
    padded = np.pad(data, voxels)
    shifted = affine.copy()
    shifted[:3, 3] -= affine[:3, :3] @ np.full(3, voxels)
    return padded, shifted


def write_tissue_maps(anatomy: str, voxel_mm: int, out_path: Path) -> Path:
    """tissue_maps written as one NIfTI (X, Y, Z, 2): GM, WM (atomically)."""
    gm, wm, affine = tissue_maps(anatomy, voxel_mm)
    return save_volume(out_path, np.stack([gm, wm], axis=-1), affine)

