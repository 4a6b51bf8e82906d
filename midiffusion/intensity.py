"""The intensity normalisation every image on the target's scale goes through: preprocessing's outputs,
one scan, the real-contrast check and the registered template of the atlas maps. Numpy only, so that
the intensity maps, one job per case, need not import ANTsPy (3 s each) to use it."""

from __future__ import annotations

import numpy as np


def normalise(data: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Robust intensity normalisation inside the brain: clip to percentiles, scale to [-1, 1];
    background (outside the mask) is -1."""
    low, high = np.percentile(data[mask], percentiles)
    scaled = 2.0 * (np.clip(data, low, high) - low) / max(high - low, 1e-8) - 1.0
    return np.where(mask, scaled, -1.0).astype(np.float32)
