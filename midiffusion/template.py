"""The ICBM152 2009a template that nilearn's wheel ships (1 mm, uint8 0..255): GM/WM maps, their brain
mask, and the undeformed reference head that brain extraction registers to a subject (with its tissue
maps, the priors of the tissue labels)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import nilearn
import numpy as np
from scipy import ndimage

from .head import BRAIN_TISSUES, HEAD_TISSUES, PROTOCOLS, TISSUES, Texture, clean_image, head_anatomy
from .io import InputError

TEMPLATE_DIR = Path(nilearn.__file__).parent / "datasets" / "data"
CSF_RIM_MM = 1.0  # nominal extra-axial CSF outside the template's brain mask


@dataclass(frozen=True)
class Template:
    """Template maps on one grid: gm and wm probabilities (0..1), brain mask, its signed distance (mm,
    negative inside); RAS affine."""

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    distance_mm: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class ReferenceHead:
    """A head-and-brain image (X, Y, Z) float32, its inside-brain fraction and its tissue partial volumes
    (3, X, Y, Z): CSF, GM, WM, summing to the brain fraction; all on `affine` (RAS)."""

    image: np.ndarray
    brain: np.ndarray
    tissues: np.ndarray
    affine: np.ndarray


def _load(name: str) -> nib.Nifti1Image:
    path = TEMPLATE_DIR / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: nilearn's ICBM152 template is missing; reinstall nilearn")
    return nib.load(str(path))


def block_average(data: np.ndarray, affine: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-average (X, Y, Z) by an integer factor (partial-volume preserving, like a coarser
    acquisition) and return it with the affine of the block centres."""
    if factor == 1:
        return data, affine
    shape = [s // factor * factor for s in data.shape]
    data = data[: shape[0], : shape[1], : shape[2]]
    blocks = data.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor)
    coarse = affine.copy()
    coarse[:3, :3] *= factor
    coarse[:3, 3] += affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    return blocks.mean(axis=(1, 3, 5)), coarse


def brain_mask_from_tissue(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Inside-brain mask: GM+WM closed and hole-filled so that ventricles and sulcal CSF are inside."""
    tissue = (gm + wm) > 0.5
    closed = ndimage.binary_closing(tissue, structure=np.ones((3, 3, 3)), iterations=2)
    filled = np.stack([ndimage.binary_fill_holes(closed[:, :, z]) for z in range(closed.shape[2])], axis=2)
    return ndimage.binary_fill_holes(filled)


def read_tissue_maps(path: Path, voxel_mm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GM, WM and affine from an anatomy.write_tissue_maps file; InputError if it is not one at voxel_mm."""
    image = nib.load(str(path))
    zooms = image.header.get_zooms()[:3]
    if image.ndim != 4 or image.shape[3] != 2 or not np.allclose(zooms, voxel_mm, atol=1e-3):
        raise InputError(
            f"{path}: expected held-out tissue maps (X, Y, Z, 2: GM, WM) at {voxel_mm} mm, got shape "
            f"{image.shape} and voxels {tuple(round(float(z), 3) for z in zooms)} mm; rebuild it (midiffusion anatomy)"
        )
    data = np.asarray(image.dataobj, dtype=np.float32)
    return data[..., 0], data[..., 1], image.affine


@lru_cache(maxsize=4)
def load_template(voxel_mm: float = 1.0, maps: Path | None = None) -> Template:
    """The template at an integer multiple of 1 mm (2.0 -> 2 mm by block averaging); with `maps`, a
    held-out anatomy's GM and WM maps at voxel_mm instead (anatomy.write_tissue_maps)."""
    factor = int(round(voxel_mm))
    if factor < 1 or abs(factor - voxel_mm) > 1e-6:
        raise ValueError(f"voxel_mm must be a whole number of millimetres, got {voxel_mm}")
    if maps is None:
        images = {name: _load(name) for name in ("gm", "wm")}
        (gm, affine), (wm, _) = (
            block_average(np.asarray(img.dataobj, dtype=np.float32) / 255.0, img.affine, factor)
            for img in images.values()
        )
    else:
        gm, wm, affine = read_tissue_maps(maps, factor)
    brain = brain_mask_from_tissue(gm, wm)
    outside = ndimage.distance_transform_edt(~brain, sampling=factor)
    inside = ndimage.distance_transform_edt(brain, sampling=factor)
    return Template(gm, wm, brain, (outside - inside).astype(np.float32), affine)


def reference_head(voxel_mm: float, contrast: str) -> ReferenceHead:
    """The undeformed template with a head of nominal thickness, nominal tissues, no texture, noise or
    bias: a head-and-brain reference image (and its brain) for brain extraction by registration."""
    template = load_template(voxel_mm)
    outside_mm = template.distance_mm - CSF_RIM_MM
    anatomy = head_anatomy(template.gm, template.wm, outside_mm, voxel_mm, template.affine, with_head=True)
    flat = np.ones_like(anatomy.brain)
    image = clean_image(anatomy, {**BRAIN_TISSUES, **HEAD_TISSUES}, Texture(flat, flat, flat), PROTOCOLS[contrast])
    tissues = np.stack([anatomy.fractions[name] for name in TISSUES])
    return ReferenceHead(image, anatomy.brain, tissues, anatomy.affine)
