"""Seconds per diffusion training step under CPU-side settings, to find what trains the default faster on
a CPU. Those that keep the maths:
torch threads, flushing subnormal floats to zero, Adam's fused kernel, channels-last memory, oneDNN
(mkldnn) convolutions off, and torch.compile; and one that changes the maths, bfloat16 autocast
(diffusion.cpu_bfloat16), which pays only on CPUs with native bfloat16 (AMX, AVX512-BF16). One process,
the default config, the default run's own slices; each variant gets a fresh model and optimizer, warms up, then is timed, and the baseline
is timed again at the end so that a drift of the machine shows. Writes results/benchmarks/training_step.csv
(--append: after the rows already there).

    .venv/bin/python tools/benchmarks/benchmark_training_step.py [--slices results/diffusion/train_slices.npz]
        [--steps 40] [--warmup 5] [--append]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import pandas as pd
import torch

from midiffusion.config import DiffusionConfig
from midiffusion.diffusion.train import _new_run, _train_step, load_slices, self_lmi_cache
from profile_training import machine_description, write_benchmark

# name -> (threads, what the variant changes)
VARIANTS = {
    "baseline, 2 threads": (2, None),
    "baseline, 1 thread": (1, None),
    "subnormals flushed to zero": (2, "flush_denormal"),
    "Adam fused": (2, "fused"),
    "channels-last": (2, "channels_last"),
    "oneDNN convolutions off": (2, "no_mkldnn"),
    "torch.compile": (2, "compile"),
    "bfloat16 autocast (diffusion.cpu_bfloat16; changes the maths)": (2, "cpu_bfloat16"),
    "baseline, 2 threads (again)": (2, None),
}


def seconds_per_step(images: torch.Tensor, config: DiffusionConfig, change: str | None, steps: int,
                     warmup: int) -> tuple[float, float]:
    """(seconds per timed step, seconds of the warm-up, compilation included) of one variant."""
    torch.backends.mkldnn.enabled = change != "no_mkldnn"
    torch.set_flush_denormal(change == "flush_denormal")
    run = _new_run(dataclasses.replace(config, cpu_bfloat16=change == "cpu_bfloat16"), torch.device("cpu"))
    if change == "fused":
        run.optimizer = torch.optim.Adam(run.model.parameters(), lr=config.lr, fused=True)
    if change == "channels_last":
        run.model = run.model.to(memory_format=torch.channels_last)
    if change == "compile":
        run.model = torch.compile(run.model)
    self_lmi = self_lmi_cache(images, config)
    began = time.perf_counter()
    for _ in range(warmup):
        _train_step(run, images, self_lmi, config)
    warm = time.perf_counter()
    for _ in range(steps):
        _train_step(run, images, self_lmi, config)
    torch.backends.mkldnn.enabled = True
    torch.set_flush_denormal(False)
    return (time.perf_counter() - warm) / steps, warm - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=Path, default=Path("results/diffusion/train_slices.npz"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/training_step.csv"))
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out")
    args = parser.parse_args()
    config = DiffusionConfig(device="cpu")
    images = load_slices(args.slices, config.image_size)
    rows = []
    for name, (threads, change) in VARIANTS.items():
        torch.set_num_threads(threads)
        step_s, warmup_s = seconds_per_step(images, config, change, args.steps, args.warmup)
        rows.append({"variant": name, "threads": threads, "s_per_step": round(step_s, 4),
                     "warmup_s": round(warmup_s, 1), "load_avg_1min": round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["vs_baseline"] = (table["s_per_step"] / table["s_per_step"].iloc[0]).round(3)
    write_benchmark(table, args.out, machine_description(), append=args.append)


if __name__ == "__main__":
    main()
