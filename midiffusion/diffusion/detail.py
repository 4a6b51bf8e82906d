"""Carry the source's full-resolution detail into a translation sampled on the coarse slice grid.

The diffusion model works on S x S slices (48 x 48 by default), so its translation, resampled back
onto the volume's grid, is blurred in-plane: the real T1w itself scores about 0.05 Dice lower after
that round trip (the `grid_ceiling` method). The source still holds the fine detail. Within a small
window the relation between source and target intensities is nearly linear (at most two or three
tissues meet there), so the translation is fitted locally as a * coarse source + b, where the coarse
source is the source through the same slice grid (what the sampler saw: the fit compares images of
one resolution, so its slope is not weakened by the blur), and that local map is then applied to the
full-resolution source. It is the guided filter of He, Sun and Tang (IEEE TPAMI 2013, "Guided image
filtering") with the fit and the output on two resolutions of the guide, in 3-D, restricted to the
brain mask. docs/method.md, "Detail transfer".
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from ..io import InputError
from ..layout import BACKGROUND

_ABOVE_BACKGROUND = 1e-6


def transfer_detail(
    translation: np.ndarray, source: np.ndarray, coarse_source: np.ndarray, mask: np.ndarray, radius: int,
    eps: float,
) -> np.ndarray:
    """The translation with the source's detail: a * source + b inside the mask, outside it unchanged.

    translation, source, coarse_source (the source through the translation's slice grid): volumes of
    one shape in [-1, 1]; mask: boolean, the brain. For every voxel, (a, b) are the least-squares fit
    of the translation on the coarse source over the brain voxels of the (2 radius + 1)^3 window around
    it, with the slope shrunk by the ridge eps (a = cov / (var + eps): where the source is flat within
    the window, var << eps, the output is the translation's local mean; at an edge, var >> eps, the
    source's edge comes through with the translation's contrast). Each voxel then averages the (a, b)
    of the windows that contain it and applies them to the full-resolution source, clipped to
    (-1, 1]. radius 0 returns the translation.
    """
    shapes = {name: volume.shape for name, volume in
              (("translation", translation), ("source", source), ("coarse source", coarse_source), ("mask", mask))}
    if len(set(shapes.values())) > 1:
        raise InputError(f"detail transfer: the volumes differ in shape: {shapes}")
    if radius < 0 or not eps > 0:
        raise InputError(f"detail transfer: expected radius >= 0 and eps > 0, got {radius} and {eps}")
    if radius == 0:
        return translation
    weight = mask.astype(np.float64)
    size = 2 * radius + 1
    count = np.maximum(uniform_filter(weight, size, mode="constant"), 1e-12)

    def mean(x: np.ndarray) -> np.ndarray:  # over the brain voxels of each window
        return uniform_filter(x * weight, size, mode="constant") / count

    coarse, target = coarse_source.astype(np.float64), translation.astype(np.float64)
    mean_coarse, mean_target = mean(coarse), mean(target)
    slope = (mean(coarse * target) - mean_coarse * mean_target) / (mean(coarse**2) - mean_coarse**2 + eps)
    intercept = mean_target - slope * mean_coarse
    # In the data range, and above the background value, which marks "outside the brain" in the output.
    fitted = np.clip(mean(slope) * source + mean(intercept), BACKGROUND + _ABOVE_BACKGROUND, 1)
    return np.where(mask, fitted, translation).astype(translation.dtype)
