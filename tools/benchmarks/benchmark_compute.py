"""Time diffusion training and translation for a config's model on the device at hand.

For each config file: seconds per training step (the config's UNet, slice size, batch and loss,
anchor augmentation included; on random slices, since only the time matters) and seconds per slice
of translation with the config's sampler, in batches of sampling.batch_size; bfloat16 says whether
the UNet ran under mixed precision (diffusion.mixed_precision, CUDA only). Multiply by your
workload: steps x s/step, slices x s/slice. Appends to results/benchmarks/compute.csv.

    python tools/benchmarks/benchmark_compute.py [--configs config/config.yaml config/paper.yaml]
                                        [--train-steps 200] [--device auto]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from midiffusion.config import DiffusionConfig, SamplingConfig
from midiffusion.diffusion.model import load_model, select_device
from midiffusion.diffusion.train import train
from midiffusion.diffusion.translate import sample_slices
from profile_training import append_csv_rows

OUT = Path("results/benchmarks/compute.csv")
COLUMNS = ["date", "machine", "device", "config", "image_size", "parameters", "batch_size", "bfloat16", "train_s_per_step",
           "sampler", "sampling_steps", "network_calls", "sampling_batch", "sample_s_per_slice", "peak_gpu_gb"]
_WARMUP_STEPS = 20  # excluded from s/step: the first steps pay for kernel selection and the self-LMI cache


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} cpu"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_config(path: Path, train_steps: int, device: torch.device, work: Path) -> dict:
    """One row: train _WARMUP_STEPS, then train_steps more (timed); then sample one batch (timed)."""
    settings = yaml.safe_load(path.read_text())
    size = settings.get("slices", {}).get("size", DiffusionConfig().image_size)
    sampling = SamplingConfig.from_dict(settings.get("sampling", {}))
    slices = np.random.default_rng(0).uniform(-1, 1, (max(64, sampling.batch_size), 1, size, size)).astype(np.float32)
    np.savez(work / "slices.npz", images=slices)
    base = {**settings.get("diffusion", {}), "image_size": size, "device": device.type, "checkpoint_every": 10**9}
    for steps in (_WARMUP_STEPS, _WARMUP_STEPS + train_steps):
        result = train(work / "slices.npz", work, DiffusionConfig.from_dict({**base, "steps": steps}), progress=False)
    loaded = load_model(result.model_path, device)
    source = slices[: sampling.batch_size]
    _synchronize(device)
    began = time.perf_counter()
    output = sample_slices(loaded, source, sampling, generator=torch.Generator().manual_seed(0))
    _synchronize(device)
    seconds = time.perf_counter() - began
    return {
        "config": str(path), "image_size": size, "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "batch_size": loaded.config.batch_size, "bfloat16": loaded.model.mixed_precision and device.type == "cuda",
        "train_s_per_step": f"{result.seconds_per_step:.4f}",
        "sampler": sampling.sampler, "sampling_steps": sampling.steps, "network_calls": output.network_calls,
        "sampling_batch": len(source), "sample_s_per_slice": f"{seconds / len(source):.4f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", type=Path, default=[Path("config/config.yaml"), Path("config/paper.yaml")])
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    device = select_device(args.device)
    common = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
              "device": _device_name(device)}
    rows = []
    for path in args.configs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with tempfile.TemporaryDirectory() as work:
            row = {**common, **benchmark_config(path, args.train_steps, device, Path(work))}
        if device.type == "cuda":
            row["peak_gpu_gb"] = f"{torch.cuda.max_memory_allocated(device) / 1e9:.2f}"
        print(row, flush=True)
        rows.append(row)
    append_csv_rows(args.out, rows, COLUMNS)


if __name__ == "__main__":
    main()
