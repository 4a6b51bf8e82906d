import numpy as np
import pytest

from midiffusion.io import InputError, save_volume
from midiffusion.diffusion.slices import build_training_slices, slice_geometry, slices_to_volume, volume_to_slices


def _brain(shape=(30, 34, 12)):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    mask = (x**2 / 0.6 + y**2 / 0.8 + z**2 / 0.7) < 1
    image = np.where(mask, np.clip(x + 0.5 * y, -1, 1), -1.0).astype(np.float32)
    return image, mask


def test_geometry_covers_brain_slices_only():
    image, mask = _brain()
    geometry = slice_geometry(mask, size=16)
    assert set(geometry.z_indices) == set(np.nonzero(mask.any(axis=(0, 1)))[0])
    assert geometry.side >= max(np.ptp(np.nonzero(mask)[0]), np.ptp(np.nonzero(mask)[1])) + 1


def test_round_trip_reconstructs_volume_at_native_size():
    image, mask = _brain()
    geometry = slice_geometry(mask, size=16)
    native = slice_geometry(mask, size=geometry.side)
    slices = volume_to_slices(image, native)
    assert slices.shape == (len(native.z_indices), 1, native.side, native.side)
    assert np.abs(slices_to_volume(slices, native) - image).max() < 1e-5


def test_downsampled_round_trip_is_close_and_in_range():
    image, mask = _brain((40, 40, 8))
    geometry = slice_geometry(mask, size=24)
    slices = volume_to_slices(image, geometry)
    assert slices.min() >= -1 and slices.max() <= 1
    back = slices_to_volume(slices, geometry)
    assert np.abs(back - image)[mask].mean() < 0.1


def test_empty_mask_and_wrong_shapes_are_rejected():
    image, mask = _brain()
    with pytest.raises(InputError, match="empty"):
        slice_geometry(np.zeros_like(mask), size=16)
    geometry = slice_geometry(mask, size=16)
    with pytest.raises(InputError, match="shape"):
        volume_to_slices(image[:-1], geometry)


def test_training_set_stacks_all_subjects(tmp_path):
    image, mask = _brain()
    paths = []
    for i in range(2):
        save_volume(tmp_path / f"img{i}.nii.gz", image, np.eye(4))
        save_volume(tmp_path / f"mask{i}.nii.gz", mask, np.eye(4), dtype=np.uint8)
        paths.append((tmp_path / f"img{i}.nii.gz", tmp_path / f"mask{i}.nii.gz"))
    n = build_training_slices([p[0] for p in paths], [p[1] for p in paths], 16, tmp_path / "train.npz")
    data = np.load(tmp_path / "train.npz")
    assert data["images"].shape == (n, 1, 16, 16) and n == 2 * mask.any(axis=(0, 1)).sum()
    assert list(np.unique(data["subject"])) == [0, 1]
