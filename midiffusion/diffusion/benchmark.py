"""Sampler benchmark: full DDPM against DDIM with fewer steps, on the same test slices and model."""

from __future__ import annotations

import dataclasses
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..config import SamplingConfig
from ..io import atomic_path, check_mask, check_same_grid, load_volume, save_volume
from ..layout import BACKGROUND
from ..metrics import dice_per_class, image_metrics
from .model import load_model
from .slices import slice_geometry, slices_to_volume, volume_to_slices
from .translate import sample_slices

# Segments (image, output) pairs into label maps, e.g. functools.partial(segment.segment_volumes, ...).
Segmenter = Callable[[list[tuple[Path, Path]]], Sequence[Path]]


def benchmark_sampling(
    model_path: Path,
    source_path: Path,
    target_path: Path,
    mask_path: Path,
    out_path: Path,
    *,
    ddim_steps: Sequence[int],
    n_slices: int,
    config: SamplingConfig = SamplingConfig(),
    device: str = "auto",
    labels_path: Path | None = None,
    segmenter: Segmenter | None = None,
    start_path: Path | None = None,
) -> pd.DataFrame:
    """Translate the `n_slices` central brain slices with DDPM (every step of T) and DDIM (each of
    `ddim_steps`), with the rest of `config` (eta, guidance scale, seed: the same initial noise for
    every setting), from pure noise or, with `start_path` (the image config.start names, on the
    source's grid), from that SDEdit start at config.start_t0: the chain the workflow translates
    with, so DDPM runs its steps below t0 and DDIM its own grid's. One row per setting:
    PSNR / SSIM / MAE against the real target inside the brain on those slices, UNet calls and wall
    time per slice. With `labels_path` and `segmenter` (the trained nnU-Net), also the Dice per class
    of the segmented translations on those slices (columns dice_CSF, dice_GM, dice_WM, dice_mean)."""
    loaded = load_model(model_path, device)
    source, target, mask_volume = (load_volume(p) for p in (source_path, target_path, mask_path))
    start_volume = load_volume(start_path) if start_path else None
    check_same_grid([source, target, mask_volume] + ([start_volume] if start_volume is not None else []))
    mask = check_mask(mask_volume.data, mask_path)
    full = slice_geometry(mask, loaded.config.image_size)
    middle = len(full.z_indices) // 2
    chosen = full.z_indices[max(0, middle - n_slices // 2) : middle - n_slices // 2 + n_slices]
    geometry = dataclasses.replace(full, z_indices=tuple(chosen))
    in_slices = np.zeros_like(mask)
    in_slices[:, :, list(chosen)] = mask[:, :, list(chosen)]
    slices = volume_to_slices(source.data, geometry)
    start_slices = volume_to_slices(start_volume.data, geometry) if start_volume is not None else None
    rows, volumes = [], []
    settings = [("ddpm", loaded.schedule.timesteps), *[("ddim", s) for s in ddim_steps]]
    for sampler, steps in tqdm(settings, desc="sampler settings", unit="setting"):
        setting = dataclasses.replace(config, sampler=sampler, steps=steps)
        start = time.perf_counter()
        result = sample_slices(loaded, slices, setting, start=start_slices,
                               generator=torch.Generator().manual_seed(config.seed))
        seconds = time.perf_counter() - start
        volumes.append(np.where(in_slices, slices_to_volume(result.images, geometry), BACKGROUND))
        rows.append({
            "date": date.today().isoformat(), "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
            "device": loaded.device.type, "sampler": sampler, "steps": steps,
            "eta": 1.0 if sampler == "ddpm" else config.eta, "guidance_scale": config.guidance_scale,
            "network_calls": result.network_calls, "n_slices": len(chosen),
            "seconds_per_slice": seconds / len(chosen), **image_metrics(volumes[-1], target.data, in_slices),
        })
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    if segmenter is not None and labels_path is not None:
        dice = _dice_on_slices(volumes, source.affine, load_volume(labels_path).data, in_slices, segmenter)
        table = pd.concat([table, dice], axis=1)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return table


def _dice_on_slices(
    volumes: list[np.ndarray], affine: np.ndarray, labels: np.ndarray, in_slices: np.ndarray, segmenter: Segmenter
) -> pd.DataFrame:
    """Segment each volume (one nnU-Net run for all) and score it on the benchmark slices only."""
    truth = np.where(in_slices, labels, 0)
    with tempfile.TemporaryDirectory(prefix="midiffusion-benchmark.") as tmp:
        pairs = [(Path(tmp) / f"image{i}.nii.gz", Path(tmp) / "seg" / f"image{i}.nii.gz") for i in range(len(volumes))]
        for volume, (image, _) in zip(volumes, pairs):
            save_volume(image, volume, affine)
        segmentations = [load_volume(path).data for path in segmenter(pairs)]
    scores = [dice_per_class(np.where(in_slices, seg, 0), truth) for seg in segmentations]
    return pd.DataFrame(scores).add_prefix("dice_")
