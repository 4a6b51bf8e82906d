"""Translate a subject's source-contrast volume into the target contrast: the one translation core
(slice batches -> sample -> volume) that the workflow, the sampler benchmark and the compute
benchmark all use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import SamplingConfig
from ..io import InputError, check_mask, check_same_grid, load_volume, save_volume
from ..layout import BACKGROUND
from .detail import transfer_detail
from .model import LoadedModel, load_model
from .sampling import sample
from .slices import slice_geometry, slices_to_volume, volume_to_slices

log = logging.getLogger(__name__)


@dataclass
class SampledSlices:
    """images: (N, 1, S, S) in [-1, 1]; network_calls: UNet evaluations per slice."""

    images: np.ndarray
    network_calls: int


def _batches(slices: np.ndarray, size: int) -> tuple[torch.Tensor, ...]:
    return torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32)).split(size)


def sample_slices(
    loaded: LoadedModel,
    slices: np.ndarray,
    config: SamplingConfig,
    *,
    start: np.ndarray | None = None,
    guided: bool = True,
    generator: torch.Generator | None = None,
    bar: tqdm | None = None,
) -> SampledSlices:
    """One sample of every slice (N, 1, S, S), in batches of config.batch_size, with the model's own
    LMI settings; `start`, (N, 1, S, S) or None, is sampling.sample's SDEdit start of each slice.
    `generator` (CPU) carries on across batches; `bar` advances once per batch."""
    if start is not None and start.shape != slices.shape:
        raise InputError(f"start: slices of shape {start.shape} differ from the source's {slices.shape}")
    outputs, calls = [], 0
    batches = _batches(slices, config.batch_size)
    starts = _batches(start, config.batch_size) if start is not None else [None] * len(batches)
    for batch, start_batch in zip(batches, starts):
        result = sample(
            loaded.model, loaded.schedule, batch.to(loaded.device), config, guided=guided,
            start=None if start_batch is None else start_batch.to(loaded.device),
            lmi_kwargs=loaded.config.lmi_kwargs(), generator=generator, progress=False,
        )
        outputs.append(result.images.cpu().numpy())
        calls = result.network_calls
        if bar is not None:
            bar.update()
    return SampledSlices(np.concatenate(outputs), calls)


def translate_volume(
    model_path: Path,
    mask_path: Path,
    out_path: Path,
    *,
    source_path: Path | None = None,
    start_path: Path | None = None,
    guided: bool = True,
    config: SamplingConfig = SamplingConfig(),
    std_path: Path | None = None,
    device: str = "auto",
) -> Path:
    """Sample every brain slice of the normalised source volume, reassemble on the mask's grid.

    Writes the mean over `config.n_samples` samples to `out_path` (background -1 outside the brain mask;
    a guided translation with the source's detail put back: config.detail_radius, detail.py)
    and, when `std_path` is given, the voxelwise standard deviation over the samples. Unguided
    sampling reads no source (source_path may be None): its image depends on the brain mask only.
    `start_path`: the SDEdit start volume in [-1, 1] on the mask's grid (the config.start baseline's
    image of the same case, which guided sampling needs when config.start is not noise), sliced
    as the source is; None starts from noise.
    """
    if guided and source_path is None:
        raise InputError("translate: guided sampling needs a source image")
    if guided and config.start != "noise" and start_path is None:
        raise InputError(f"sampling.start: {config.start} needs its image as the start (translate --start PATH)")
    loaded = load_model(model_path, device)
    if guided and start_path is not None:
        log.info("start: %s (sampling.start %s) noised to t0 %g", start_path, config.start, config.start_t0)
    elif guided:
        log.info("start: noise at T")
    mask_volume = load_volume(mask_path)
    source, start = (load_volume(path) if path is not None else None for path in (source_path, start_path))
    check_same_grid([mask_volume] + [volume for volume in (source, start) if volume is not None])
    mask = check_mask(mask_volume.data, mask_path)
    geometry = slice_geometry(mask, loaded.config.image_size)
    slices = volume_to_slices(source.data if source else np.full(mask.shape, BACKGROUND, np.float32), geometry)
    start_slices = volume_to_slices(start.data, geometry) if start is not None else None
    generator = torch.Generator().manual_seed(config.seed)
    batches = -(-len(slices) // config.batch_size)
    name = Path(source_path or mask_path).name
    samples = []
    with tqdm(total=config.n_samples * batches, desc=f"translate {name}", unit="batch") as bar:
        for _ in range(config.n_samples):
            sampled = sample_slices(loaded, slices, config, start=start_slices, guided=guided, generator=generator,
                                    bar=bar)
            samples.append(np.where(mask, slices_to_volume(sampled.images, geometry), BACKGROUND))
    stack = np.stack(samples)
    if std_path is not None:
        save_volume(std_path, stack.std(axis=0), mask_volume.affine)
    translation = stack.mean(axis=0)
    if guided:
        coarse_source = slices_to_volume(slices, geometry)  # what the sampler saw; the fit reads the brain only
        translation = transfer_detail(translation, source.data, coarse_source, mask, config.detail_radius,
                                      config.detail_eps)
    return save_volume(out_path, translation, mask_volume.affine)
