"""Reading and writing volumes and files, with clear errors and no half-written outputs."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np


class InputError(ValueError):
    """Bad user input: the message names the file (or config key) and the problem."""


@dataclass
class Volume:
    """A 3-D image: voxel array (X, Y, Z) float32 and its 4x4 voxel-to-world (RAS mm) affine."""

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def voxel_mm(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write to; rename it onto `path` only on success.

    The temporary name keeps the file's suffixes (".nii.gz", ".npz") so writers that infer the
    format from the name still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.removesuffix(suffix)}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_volume(path: str | Path, *, allow_nan: bool = False, canonical: bool = False) -> Volume:
    """Load a 3-D NIfTI (a 4-D one with a single volume is squeezed) as float32; `canonical`
    reorients the voxel axes to RAS (nibabel's closest canonical; no resampling).

    Raises InputError naming the file when it is missing, unreadable, not 3-D or holds NaN/inf.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        image = nib.load(str(path))
        if canonical:
            image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI image ({error})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D image, got shape {data.shape}")
    if not allow_nan and not np.isfinite(data).all():
        raise InputError(f"{path}: image contains {int((~np.isfinite(data)).sum())} NaN or infinite voxels")
    return Volume(data=data, affine=image.affine.astype(np.float64), path=path)


def save_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, dtype: Any = np.float32) -> Path:
    """Write a NIfTI atomically (temporary name, then rename)."""
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def check_same_grid(volumes: list[Volume], atol: float = 1e-3) -> None:
    """Raise InputError naming the files if the volumes do not share shape and affine."""
    first = volumes[0]
    for other in volumes[1:]:
        if other.data.shape != first.data.shape:
            raise InputError(
                f"{other.path}: shape {other.data.shape} does not match {first.path} shape {first.data.shape}"
            )
        if not np.allclose(other.affine, first.affine, atol=atol):
            raise InputError(f"{other.path}: affine does not match {first.path}")


def check_mask(mask: np.ndarray, path: str | Path) -> np.ndarray:
    """Return the mask as bool; InputError if it is empty."""
    mask = np.asarray(mask) > 0
    if not mask.any():
        raise InputError(f"{path}: brain mask is empty")
    return mask


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
