"""The target's intensity scale: the normalisation every image on it goes through (preprocessing's outputs,
one scan, the real-contrast check and the registered template of the atlas maps) and the training targets'
brain quantiles that the rank maps match (kept in the training slices and model.pt). Numpy only, so that
the intensity maps, one job per case, need not import ANTsPy (3 s each) or torch to use it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Levels of the training targets' brain quantiles that the rank maps match (reference_quantiles).
REFERENCE_LEVELS = np.linspace(0.0, 1.0, 1001)


def normalise(data: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Robust intensity normalisation inside the brain: clip to percentiles, scale to [-1, 1];
    background (outside the mask) is -1."""
    low, high = np.percentile(data[mask], percentiles)
    scaled = 2.0 * (np.clip(data, low, high) - low) / max(high - low, 1e-8) - 1.0
    return np.where(mask, scaled, -1.0).astype(np.float32)


def reference_quantiles(brains: Sequence[np.ndarray]) -> np.ndarray:
    """The inverse CDF of the pooled brain intensities (each array: one image's brain voxels) at
    REFERENCE_LEVELS: the one intensity reference of the rank maps, kept in the training slices and model.pt."""
    values, counts = np.unique(np.concatenate([np.ravel(brain) for brain in brains]), return_counts=True)
    return np.interp(REFERENCE_LEVELS, np.cumsum(counts) / counts.sum(), values).astype(np.float32)
