"""Detail transfer (midiffusion.diffusion.detail): the source's fine detail put back into a coarse translation."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from midiffusion.diffusion.detail import transfer_detail
from midiffusion.io import InputError


def _head(shape=(32, 32, 12), seed=0):
    """A brain mask and a piecewise-constant 'true target' with fine structure (3 tissues in blobs)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    mask = ((y - 15.5) ** 2 + (x - 15.5) ** 2) < 14**2
    tissue = np.digitize(gaussian_filter(rng.standard_normal(shape), 1.0), [-0.15, 0.15])
    target = np.array([-0.6, 0.1, 0.7])[tissue]
    return mask, np.where(mask, target, -1.0)


def test_restores_detail_that_the_slice_grid_blurred():
    mask, target = _head()
    source = -0.8 * target + 0.05  # a T2w-like inverse contrast at full resolution, linear everywhere
    # The grid's in-plane blur, on the translation (here a perfect one) and on the source alike.
    blurred, coarse_source = (gaussian_filter(v, (1.5, 1.5, 0)) for v in (target, source))
    restored = transfer_detail(blurred, source, coarse_source, mask, radius=2, eps=1e-3)
    before = np.abs(blurred - target)[mask].mean()
    after = np.abs(restored - target)[mask].mean()
    assert after < 0.1 * before
    assert np.corrcoef(restored[mask], target[mask])[0, 1] > 0.99
    # Fitted on the sharp source instead, the blur would weaken the slope: the coarse source matters.
    unmatched = transfer_detail(blurred, source, source, mask, radius=2, eps=1e-3)
    assert np.abs(unmatched - target)[mask].mean() > 3 * after


def test_keeps_the_background_and_the_range():
    mask, target = _head(seed=1)
    source = np.where(mask, 3 * target, -1.0)  # steep: the fit would overshoot without the clip
    restored = transfer_detail(target * 0.9, source, source, mask, radius=1, eps=1e-2)
    assert np.array_equal(restored[~mask], (target * 0.9)[~mask])
    assert restored[mask].min() > -1 and restored.max() <= 1  # -1 is the background's value
    assert restored.dtype == target.dtype


def test_flat_source_keeps_the_translations_local_mean():
    mask, target = _head(seed=2)
    source = np.where(mask, 0.2, -1.0)  # no detail to give: the slope vanishes
    restored = transfer_detail(target, source, source, mask, radius=1, eps=1e-2)
    assert abs(restored[mask].mean() - target[mask].mean()) < 0.05  # a local average of the translation
    assert restored[mask].std() < 0.8 * target[mask].std()


def test_radius_zero_returns_the_translation():
    mask, target = _head()
    assert transfer_detail(target, -target, -target, mask, radius=0, eps=1e-2) is target


@pytest.mark.parametrize("kwargs, message", [
    ({"radius": -1, "eps": 1e-2}, "radius >= 0"),
    ({"radius": 1, "eps": 0.0}, "eps > 0"),
])
def test_rejects_bad_settings(kwargs, message):
    mask, target = _head()
    with pytest.raises(InputError, match=message):
        transfer_detail(target, target, target, mask, **kwargs)


def test_rejects_volumes_of_different_shapes():
    mask, target = _head()
    with pytest.raises(InputError, match="coarse source"):
        transfer_detail(target, target, target[:-1], mask, radius=1, eps=1e-2)
