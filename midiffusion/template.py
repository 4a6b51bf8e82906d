"""The ICBM152 2009a template that nilearn's wheel ships (1 mm, uint8 0..255): head T1 and GM/WM maps."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import nilearn
import numpy as np
from scipy import ndimage

TEMPLATE_DIR = Path(nilearn.__file__).parent / "datasets" / "data"


@dataclass(frozen=True)
class Template:
    """Template maps on one grid: t1 (head, 0..1), gm and wm probabilities (0..1), brain mask; RAS affine."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray


def _load(name: str) -> nib.Nifti1Image:
    path = TEMPLATE_DIR / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: nilearn's ICBM152 template is missing; reinstall nilearn")
    return nib.load(str(path))


def _downsample(data: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by an integer factor (partial-volume preserving)."""
    if factor == 1:
        return data
    shape = [s // factor * factor for s in data.shape]
    data = data[: shape[0], : shape[1], : shape[2]]
    return data.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor).mean(
        axis=(1, 3, 5)
    )


def brain_mask_from_tissue(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Inside-brain mask: GM+WM closed and hole-filled so that ventricles and sulcal CSF are inside."""
    tissue = (gm + wm) > 0.5
    closed = ndimage.binary_closing(tissue, structure=np.ones((3, 3, 3)), iterations=2)
    filled = np.stack([ndimage.binary_fill_holes(closed[:, :, z]) for z in range(closed.shape[2])], axis=2)
    return ndimage.binary_fill_holes(filled)


@lru_cache(maxsize=4)
def load_template(voxel_mm: float = 1.0) -> Template:
    """The template at an integer multiple of 1 mm (2.0 -> 2 mm by block averaging)."""
    factor = int(round(voxel_mm))
    if factor < 1 or abs(factor - voxel_mm) > 1e-6:
        raise ValueError(f"voxel_mm must be a whole number of millimetres, got {voxel_mm}")
    images = {name: _load(name) for name in ("t1", "gm", "wm")}
    maps = {name: _downsample(np.asarray(img.dataobj, dtype=np.float32) / 255.0, factor) for name, img in images.items()}
    affine = images["t1"].affine.copy()
    affine[:3, :3] *= factor
    affine[:3, 3] += affine[:3, :3] @ np.full(3, (factor - 1) / (2 * factor))  # block centres
    return Template(maps["t1"], maps["gm"], maps["wm"], brain_mask_from_tissue(maps["gm"], maps["wm"]), affine)
