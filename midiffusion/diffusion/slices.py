"""Axial slices for the diffusion model: volume (X, Y, Z) <-> slices (N, 1, S, S), and the training set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..intensity import reference_quantiles
from ..io import InputError, atomic_path, check_mask, check_same_grid, load_volume
from ..layout import BACKGROUND


@dataclass(frozen=True)
class SliceGeometry:
    """Where a volume's slices come from: the axial indices with brain, and a square in-plane crop
    [x0, x0 + side) x [y0, y0 + side) (may reach outside the volume: padded with background)."""

    shape: tuple[int, int, int]
    z_indices: tuple[int, ...]
    x0: int
    y0: int
    side: int
    size: int


def slice_geometry(mask: np.ndarray, size: int, margin: int = 2) -> SliceGeometry:
    """Geometry covering every axial slice that holds brain, with one square crop around the brain."""
    mask = check_mask(mask, "brain mask")
    xs, ys, zs = np.nonzero(mask)
    side = int(max(np.ptp(xs), np.ptp(ys))) + 1 + 2 * margin
    centre_x, centre_y = (xs.min() + xs.max() + 1) // 2, (ys.min() + ys.max() + 1) // 2
    return SliceGeometry(
        shape=tuple(int(s) for s in mask.shape),
        z_indices=tuple(int(z) for z in np.unique(zs)),
        x0=int(centre_x - side // 2),
        y0=int(centre_y - side // 2),
        side=side,
        size=size,
    )


def _padding(g: SliceGeometry) -> int:
    """In-plane padding that makes the crop fall inside the volume."""
    return max(0, -g.x0, -g.y0, g.x0 + g.side - g.shape[0], g.y0 + g.side - g.shape[1])


def _crop(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(side, side, n_slices) crop, background outside the volume."""
    g = geometry
    pad = _padding(g)
    padded = np.pad(volume[:, :, list(g.z_indices)], ((pad, pad), (pad, pad), (0, 0)), constant_values=BACKGROUND)
    return padded[g.x0 + pad : g.x0 + pad + g.side, g.y0 + pad : g.y0 + pad + g.side]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 1, s, s) -> (N, 1, size, size), antialiased bilinear."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False).numpy()


def volume_to_slices(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Normalised volume (X, Y, Z) in [-1, 1] -> axial slices (N, 1, S, S), N = len(z_indices)."""
    if tuple(volume.shape) != geometry.shape:
        raise InputError(f"volume shape {volume.shape} does not match the slice geometry {geometry.shape}")
    crop = _crop(volume, geometry)
    return np.clip(_resize(crop.transpose(2, 0, 1)[:, None], geometry.size), -1.0, 1.0)


def slices_to_volume(slices: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Inverse of volume_to_slices: (N, 1, S, S) -> (X, Y, Z), background elsewhere."""
    g = geometry
    if slices.shape != (len(g.z_indices), 1, g.size, g.size):
        raise InputError(f"slices of shape {slices.shape} do not fit the geometry ({len(g.z_indices)}, 1, {g.size}, {g.size})")
    crop = _resize(slices, g.side)[:, 0].transpose(1, 2, 0)
    pad = _padding(g)
    padded = np.full((g.shape[0] + 2 * pad, g.shape[1] + 2 * pad, len(g.z_indices)), BACKGROUND, np.float32)
    padded[g.x0 + pad : g.x0 + pad + g.side, g.y0 + pad : g.y0 + pad + g.side] = crop
    volume = np.full(g.shape, BACKGROUND, np.float32)
    volume[:, :, list(g.z_indices)] = padded[pad : pad + g.shape[0], pad : pad + g.shape[1]]
    return volume


def build_training_slices(images: list[Path], masks: list[Path], size: int, out_path: Path) -> int:
    """Stack the axial slices of normalised training volumes into out_path (.npz: images (N, 1, S, S) float16,
    subject (N,) index of the source volume, target_quantiles: the volumes' pooled brain quantiles, the
    intensity reference of the rank maps that model.pt keeps). Returns N."""
    stacks, owners, brains = [], [], []
    for index, (image_path, mask_path) in enumerate(zip(images, masks, strict=True)):
        image, mask = load_volume(image_path), load_volume(mask_path)
        check_same_grid([image, mask])
        inside = check_mask(mask.data, mask_path)
        geometry = slice_geometry(inside, size)
        stacks.append(volume_to_slices(image.data, geometry))
        owners.append(np.full(len(geometry.z_indices), index))
        brains.append(image.data[inside])
    stacked = np.concatenate(stacks).astype(np.float16)
    with atomic_path(out_path) as tmp:
        np.savez_compressed(tmp, images=stacked, subject=np.concatenate(owners),
                            target_quantiles=reference_quantiles(brains))
    return len(stacked)
