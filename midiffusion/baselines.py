"""Methods that need no diffusion model. Each takes the same inputs and returns a normalised volume
on the target grid; adding a method is one function here plus its entry in the registry (methods.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .intensity import normalise, reference_quantiles
from .io import InputError, Volume, check_mask, check_same_grid, load_volume, save_volume
from .layout import BACKGROUND

# grid_ceiling imports slices (torch) where it needs it, and nothing here imports ANTsPy: the other
# baselines load in half a second instead of three to six.

ATLAS_BINS = 64  # source-intensity bins of atlas_map's look-up table over [-1, 1] (width 1/32)


@dataclass
class BaselineInputs:
    """A test subject's normalised source and target volumes, its brain mask, and the training
    subjects' normalised target volumes with their masks (the target-contrast intensity reference), or
    their brain quantiles instead (`quantiles`, reference_quantiles: one scan has them from model.pt).

    The optional inputs only some baselines need (InputError naming the option when missing):
    template: the target-contrast template head registered to the subject by brain extraction
    (preprocessing's template.nii.gz, not normalised; atlas_map); slice_size: the side S of the
    diffusion model's slices (config slices.size; grid_ceiling); percentiles: preprocessing's
    normalisation (config preprocess.percentiles; None: intensity.normalise's default), applied to
    the template.
    """

    source: Volume
    target: Volume
    mask: np.ndarray
    references: list[tuple[Volume, np.ndarray]]
    template: Volume | None = None
    slice_size: int | None = None
    percentiles: tuple[float, float] | None = None
    quantiles: np.ndarray | None = None


def _in_brain(inputs: BaselineInputs, values: np.ndarray) -> np.ndarray:
    """A volume holding `values` (one per mask voxel) in the brain, BACKGROUND elsewhere."""
    out = np.full(inputs.source.data.shape, BACKGROUND, dtype=np.float32)
    out[inputs.mask] = values
    return out


def match_quantiles(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """`values` mapped rank by rank onto the distribution whose quantiles at equally spaced levels over
    [0, 1] are `quantiles` (as skimage's match_histograms: equal values get equal outputs)."""
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    return np.interp(np.cumsum(counts) / values.size, levels, quantiles)[inverse].astype(np.float32)


def _reference(inputs: BaselineInputs, method: str) -> np.ndarray:
    """The training targets' brain quantiles: given, or from the reference volumes."""
    if inputs.quantiles is not None:
        return inputs.quantiles
    if not inputs.references:
        raise InputError(f"baseline {method} needs the training target images (--reference, --reference-mask)")
    return reference_quantiles([volume.data[mask] for volume, mask in inputs.references])


def oracle(inputs: BaselineInputs) -> np.ndarray:
    """The real target image (upper bound)."""
    return inputs.target.data


def none(inputs: BaselineInputs) -> np.ndarray:
    """The source image fed straight to the target segmenter (lower bound)."""
    return inputs.source.data


def histmatch(inputs: BaselineInputs) -> np.ndarray:
    """Source brain intensities histogram-matched to the pooled training target brains."""
    return _in_brain(inputs, match_quantiles(inputs.source.data[inputs.mask], _reference(inputs, "histmatch")))


def invert(inputs: BaselineInputs) -> np.ndarray:
    """The source brain negated, then histogram-matched to the pooled training target brains: the
    monotone decreasing map with the target's histogram (CSF bright in PDw/T2w becomes dark as in T1w)."""
    negated = -inputs.source.data[inputs.mask]
    return _in_brain(inputs, match_quantiles(negated, _reference(inputs, "invert")))


@dataclass(frozen=True)
class IntensityMap:
    """A voxelwise look-up table: knots (K,) increasing source intensities, values (K,) the mapped
    intensity at each; linear between knots, constant beyond the outer ones."""

    knots: np.ndarray
    values: np.ndarray

    def __call__(self, intensities: np.ndarray) -> np.ndarray:
        return np.interp(intensities, self.knots, self.values).astype(np.float32)


def intensity_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each normalised intensity, `bins` equal bins over [-1, 1] (values outside clipped)."""
    return np.clip(((values + 1.0) / 2.0 * bins).astype(np.int64), 0, bins - 1)


def binned_means(index: np.ndarray, bins: int, *quantities: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The voxel count of each bin and each quantity's mean in it (0 where empty): the conditional mean
    given the binned intensity, which atlas_map fits and the intensity bound (metrics) reads."""
    counts = np.bincount(index, minlength=bins)
    return counts, [np.bincount(index, weights=q, minlength=bins) / np.maximum(counts, 1) for q in quantities]


def fit_intensity_map(source: np.ndarray, template: np.ndarray, bins: int = ATLAS_BINS) -> IntensityMap:
    """The conditional mean of `template` given `source` (same shape, both in [-1, 1]) on `bins`
    equal source bins over [-1, 1]: one knot per non-empty bin, at the bin's mean source intensity
    (its centre of mass, exact for a map linear within the bin), valued at its mean template
    intensity. Empty bins get no knot: the map interpolates across them from the neighbouring bins.
    The outer two knots' line is extended to the ends of the range, -1 and 1 (half a bin for a
    normalised source, which reaches both), clipped to [-1, 1]. Not constrained to be monotone."""
    source = np.asarray(source, dtype=np.float64).ravel()
    template = np.asarray(template, dtype=np.float64).ravel()
    if source.shape != template.shape or source.size == 0:
        raise InputError(f"intensity map: source ({source.size}) and template ({template.size}) voxels must pair up")
    counts, (knots, values) = binned_means(intensity_bins(source, bins), bins, source, template)
    knots, values = knots[counts > 0], values[counts > 0]
    if len(knots) > 1:  # the outer two knots' line, extended to the ends of the range
        low = values[0] + (values[1] - values[0]) / (knots[1] - knots[0]) * (-1.0 - knots[0])
        high = values[-1] + (values[-1] - values[-2]) / (knots[-1] - knots[-2]) * (1.0 - knots[-1])
        inner = (knots > -1.0) & (knots < 1.0)
        knots = np.concatenate([[-1.0], knots[inner], [1.0]])
        values = np.concatenate([[np.clip(low, -1.0, 1.0)], values[inner], [np.clip(high, -1.0, 1.0)]])
    return IntensityMap(knots, values)


def atlas_map(inputs: BaselineInputs) -> np.ndarray:
    """A per-subject look-up table from source to target-contrast intensity, fitted on the joint
    histogram of the subject's normalised source and the template head registered to the subject
    (fit_intensity_map inside the brain mask, ATLAS_BINS bins), then applied to the source.

    The template is first normalised like the target images (intensity.normalise in the same brain
    mask with the same percentiles), so the output is on the target's [-1, 1] scale. Only the
    table (ATLAS_BINS numbers) comes from the template: the output is a function of the source's
    intensities alone, so the template's anatomy cannot leak into it. The template was registered to
    the subject's target image (brain extraction), so the pairing of voxels uses that alignment.
    """
    if inputs.template is None:
        raise InputError(
            "baseline atlas_map needs the registered template head (--template: preprocessing's "
            "template.nii.gz, written only with preprocess.brain_extraction: template)"
        )
    if inputs.percentiles is None:
        template = normalise(inputs.template.data, inputs.mask)
    else:
        template = normalise(inputs.template.data, inputs.mask, inputs.percentiles)
    source = inputs.source.data[inputs.mask]
    mapping = fit_intensity_map(source, template[inputs.mask])
    return _in_brain(inputs, mapping(source))


def atlas_match(inputs: BaselineInputs) -> np.ndarray:
    """atlas_map, then histogram-matched to the pooled training target brains: the source's voxels ranked
    by the template intensity that the look-up gives their own intensity (a map of any shape), then given
    the training targets' histogram. atlas_map's conditional mean shrinks the tissues towards each other
    where the source separates them weakly; the rank match restores the target's contrast. Where the
    look-up is decreasing this is `invert`, where it is increasing `histmatch`: no direction is assumed."""
    mapped = atlas_map(inputs)[inputs.mask]
    return _in_brain(inputs, match_quantiles(mapped, _reference(inputs, "atlas_match")))


def grid_ceiling(inputs: BaselineInputs) -> np.ndarray:
    """The real target image through the diffusion model's slice grid and back (slice_geometry,
    volume_to_slices, slices_to_volume at the slice size S), BACKGROUND outside the brain mask:
    what the resampling alone costs, the ceiling of any translation made on that grid."""
    if inputs.slice_size is None:
        raise InputError("baseline grid_ceiling needs the slice size (--slice-size, config slices.size)")
    from .diffusion.slices import slice_geometry, slices_to_volume, volume_to_slices

    geometry = slice_geometry(inputs.mask, inputs.slice_size)
    volume = slices_to_volume(volume_to_slices(inputs.target.data, geometry), geometry)
    return np.where(inputs.mask, volume, BACKGROUND).astype(np.float32)


RANK_MAPS = ("atlas_match", "invert", "histmatch")  # the maps matched to the training targets' quantiles
BASELINES: dict[str, Callable[[BaselineInputs], np.ndarray]] = {
    "oracle": oracle,
    "grid_ceiling": grid_ceiling,
    "atlas_map": atlas_map,
    "atlas_match": atlas_match,
    "invert": invert,
    "histmatch": histmatch,
    "none": none,
}


def run_baseline(
    method: str,
    source: Path,
    target: Path,
    mask: Path,
    references: list[Path],
    reference_masks: list[Path],
    out_path: Path,
    *,
    template: Path | None = None,
    slice_size: int | None = None,
    percentiles: tuple[float, float] | None = None,
) -> Path:
    """Load the inputs, apply BASELINES[method], write the volume on the target grid.

    template, slice_size, percentiles: see BaselineInputs; only the baselines that need them read them.
    """
    if method not in BASELINES:
        raise InputError(f"baseline {method!r}: unknown; known are {list(BASELINES)}")
    volumes = [load_volume(source), load_volume(target), load_volume(mask)]
    template_volume = load_volume(template) if template is not None else None
    check_same_grid(volumes + ([template_volume] if template_volume is not None else []))
    pairs = []
    for image_path, mask_path in zip(references, reference_masks, strict=True):
        image, ref_mask = load_volume(image_path), load_volume(mask_path)
        check_same_grid([image, ref_mask])
        pairs.append((image, check_mask(ref_mask.data, mask_path)))
    inputs = BaselineInputs(
        volumes[0], volumes[1], check_mask(volumes[2].data, mask), pairs,
        template=template_volume, slice_size=slice_size, percentiles=percentiles,
    )
    return save_volume(out_path, BASELINES[method](inputs), volumes[1].affine)
