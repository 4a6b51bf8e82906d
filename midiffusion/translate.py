"""Translate a subject's source-contrast volume into the target contrast, slice batch by slice batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from .config import from_dict
from .io import check_mask, check_same_grid, load_volume, save_volume
from .sampling import sample
from .slices import BACKGROUND, slice_geometry, slices_to_volume, volume_to_slices
from .train import load_model

# Diffusion methods: name -> whether the LMI condition guides the sampler.
DIFFUSION_METHODS: dict[str, bool] = {"midiffusion": True, "unguided": False}


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample (config section `sampling`)."""

    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = 50
    eta: float = 0.0
    n_samples: int = 1
    guidance_scale: float = 1.0
    batch_size: int = 32
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> SamplingConfig:
        return from_dict(cls, values, "sampling")


def translate_volume(
    model_path: Path,
    source_path: Path,
    mask_path: Path,
    out_path: Path,
    *,
    guided: bool = True,
    config: SamplingConfig = SamplingConfig(),
    std_path: Path | None = None,
    device: str = "auto",
) -> Path:
    """Sample every brain slice of the normalised source volume, reassemble on the source's grid.

    Writes the mean over `config.n_samples` samples to `out_path` (background -1 outside the brain mask)
    and, when `std_path` is given, the voxelwise standard deviation over the samples.
    """
    loaded = load_model(model_path, device)
    source, mask_volume = load_volume(source_path), load_volume(mask_path)
    check_same_grid([source, mask_volume])
    mask = check_mask(mask_volume.data, mask_path)
    geometry = slice_geometry(mask, loaded.config.image_size)
    slices = torch.from_numpy(volume_to_slices(source.data, geometry))
    device_ = next(loaded.model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    batches = torch.split(slices, config.batch_size)
    samples = []
    with tqdm(total=config.n_samples * len(batches), desc=f"translate {Path(source_path).name}", unit="batch") as bar:
        for _ in range(config.n_samples):
            outputs = []
            for batch in batches:
                result = sample(
                    loaded.model, loaded.schedule, batch.to(device_),
                    sampler=config.sampler, steps=config.steps, eta=config.eta, guided=guided,
                    guidance_scale=config.guidance_scale, lmi_kwargs=loaded.config.lmi_kwargs(),
                    generator=generator, progress=False,
                )
                outputs.append(result.images.cpu().numpy())
                bar.update()
            samples.append(np.where(mask, slices_to_volume(np.concatenate(outputs), geometry), BACKGROUND))
    stack = np.stack(samples)
    if std_path is not None:
        save_volume(std_path, stack.std(axis=0), source.affine)
    return save_volume(out_path, stack.mean(axis=0), source.affine)
