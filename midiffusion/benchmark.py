"""Sampler benchmark: full DDPM against DDIM with fewer steps, on the same test slices and model."""

from __future__ import annotations

import dataclasses
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .io import atomic_path, check_mask, check_same_grid, load_volume
from .metrics import image_metrics
from .sampling import sample
from .slices import BACKGROUND, slice_geometry, slices_to_volume, volume_to_slices
from .train import load_model


def benchmark_sampling(
    model_path: Path,
    source_path: Path,
    target_path: Path,
    mask_path: Path,
    out_path: Path,
    *,
    ddim_steps: list[int] = (25, 50, 100),
    n_slices: int = 8,
    seed: int = 0,
    device: str = "auto",
) -> pd.DataFrame:
    """Translate the `n_slices` central brain slices with DDPM (all T steps) and DDIM (each of
    `ddim_steps`), same initial noise; write one row per setting: PSNR / SSIM / MAE against the real
    target inside the brain on those slices, UNet calls and wall time per slice."""
    loaded = load_model(model_path, device)
    source, target, mask_volume = (load_volume(p) for p in (source_path, target_path, mask_path))
    check_same_grid([source, target, mask_volume])
    mask = check_mask(mask_volume.data, mask_path)
    full = slice_geometry(mask, loaded.config.image_size)
    middle = len(full.z_indices) // 2
    chosen = full.z_indices[max(0, middle - n_slices // 2) : middle - n_slices // 2 + n_slices]
    geometry = dataclasses.replace(full, z_indices=tuple(chosen))
    in_slices = np.zeros_like(mask)
    in_slices[:, :, list(chosen)] = mask[:, :, list(chosen)]
    device_ = next(loaded.model.parameters()).device
    batch = torch.from_numpy(volume_to_slices(source.data, geometry)).to(device_)
    rows = []
    for sampler, steps in [("ddpm", loaded.schedule.timesteps), *[("ddim", s) for s in ddim_steps]]:
        start = time.perf_counter()
        result = sample(
            loaded.model, loaded.schedule, batch, sampler=sampler, steps=steps,
            lmi_kwargs=loaded.config.lmi_kwargs(), generator=torch.Generator().manual_seed(seed),
        )
        seconds = time.perf_counter() - start
        volume = np.where(in_slices, slices_to_volume(result.images.cpu().numpy(), geometry), BACKGROUND)
        metrics = image_metrics(volume, target.data, in_slices)
        rows.append({
            "date": date.today().isoformat(), "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
            "device": device_.type, "sampler": sampler, "steps": steps, "network_calls": result.network_calls,
            "n_slices": len(chosen), "seconds_per_slice": seconds / len(chosen), **metrics,
        })
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return table
