"""Methods that need no diffusion model. Each takes the same inputs and returns a normalised volume
on the target grid; adding a method is one function here plus its entry in methods.REGISTRY."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from skimage.exposure import match_histograms

from .io import Volume, check_mask, check_same_grid, load_volume, save_volume
from .layout import BACKGROUND


@dataclass
class BaselineInputs:
    """A test subject's normalised source and target volumes, its brain mask, and the training
    subjects' normalised target volumes with their masks (the target-contrast intensity reference)."""

    source: Volume
    target: Volume
    mask: np.ndarray
    references: list[tuple[Volume, np.ndarray]]


def oracle(inputs: BaselineInputs) -> np.ndarray:
    """The real target image (upper bound)."""
    return inputs.target.data


def none(inputs: BaselineInputs) -> np.ndarray:
    """The source image fed straight to the target segmenter (lower bound)."""
    return inputs.source.data


def histmatch(inputs: BaselineInputs) -> np.ndarray:
    """Source brain intensities histogram-matched to the pooled training target brains."""
    reference = np.concatenate([volume.data[mask] for volume, mask in inputs.references])
    matched = match_histograms(inputs.source.data[inputs.mask], reference)
    out = np.full_like(inputs.source.data, BACKGROUND)
    out[inputs.mask] = matched
    return out


BASELINES: dict[str, Callable[[BaselineInputs], np.ndarray]] = {"oracle": oracle, "none": none, "histmatch": histmatch}


def run_baseline(
    method: str,
    source: Path,
    target: Path,
    mask: Path,
    references: list[Path],
    reference_masks: list[Path],
    out_path: Path,
) -> Path:
    """Load the inputs, apply BASELINES[method], write the volume on the target grid."""
    volumes = [load_volume(source), load_volume(target), load_volume(mask)]
    check_same_grid(volumes)
    pairs = []
    for image_path, mask_path in zip(references, reference_masks, strict=True):
        image, ref_mask = load_volume(image_path), load_volume(mask_path)
        check_same_grid([image, ref_mask])
        pairs.append((image, check_mask(ref_mask.data, mask_path)))
    inputs = BaselineInputs(volumes[0], volumes[1], check_mask(volumes[2].data, mask), pairs)
    return save_volume(out_path, BASELINES[method](inputs), volumes[1].affine)
