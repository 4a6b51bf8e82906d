"""Benchmark the LMI layer against one forward pass of the paper-size UNet and a plain reference: LMI
conditions every sampling step, so its cost beside the UNet's says whether it limits sampling.

Per device (CPU, and CUDA when present) and image size, times one LMI(anchor, x_t) call (the
per-sampling-step cost: LMI(anchor, anchor) is cached) at the default bins and sigma and at
config/paper.yaml's, on two inputs: real slices (two batches of the default run's normalised T1w
training slices, resized) and uniform noise; then one UNet forward on the same batch, and a
straightforward unfold-based vectorised implementation of the same definition. The UNet is the
project's own (midiffusion.diffusion.unet.UNet) at paper size. The calls alternate, so the ratio of one run
is fair on a shared machine. Prints the rows and appends them to results/benchmarks/lmi_bins.csv
(results/benchmarks/lmi.csv holds earlier rows, defaults and noise only, without the last columns);
load_avg_1min says how busy the shared machine was.

    python tools/benchmarks/benchmark_lmi.py [--sizes 128 64] [--batch 4] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from midiffusion.diffusion.lmi import DEFAULT_BINS, DEFAULT_SIGMA, local_mutual_information, to_unit
from midiffusion.diffusion.unet import UNet
from profile_training import append_csv_rows

COLUMNS = ["date", "machine", "device", "batch", "size", "bins", "sigma", "lmi_ms", "unet_forward_ms", "ratio",
           "reference_ms", "speedup_over_reference", "reference_note", "load_avg_1min", "input", "unet"]
UNET = "midiffusion.diffusion.unet.UNet, paper size: channels 64-128-128-128, 2 res blocks, attention at 16x16"


def reference_lmi(anchor, other, patch=3, window=3, bins=DEFAULT_BINS, sigma=DEFAULT_SIGMA):
    """The definition, vectorised the obvious way: unfold every patch, one joint histogram per offset."""
    n, _, height, width = anchor.shape
    rp, rw = patch // 2, window // 2
    centres = (torch.arange(bins, dtype=torch.float64) / (bins - 1)).to(anchor)

    def weights(patches):  # (N, k*k, L) -> (N, k*k, bins, L)
        w = torch.exp(-((patches[:, :, None] - centres[:, None]) ** 2) / (2 * sigma**2))
        return w / w.sum(dim=2, keepdim=True)

    tiny = torch.finfo(anchor.dtype).tiny  # 0 log 0 = 0

    def entropy(p, dims):
        return -(p * torch.log(p.clamp_min(tiny))).sum(dims)

    wa = weights(F.unfold(F.pad(anchor, [rp] * 4, mode="replicate"), patch))
    padded = F.pad(other, [rp + rw] * 4, mode="replicate")
    best = anchor.new_zeros(n, height * width)
    for dy in range(window):
        for dx in range(window):
            shifted = padded[..., dy : dy + height + 2 * rp, dx : dx + width + 2 * rp]
            joint = torch.einsum("nqjl,nqkl->njkl", wa, weights(F.unfold(shifted, patch))) / patch**2
            pa, pb = joint.sum(2), joint.sum(1)
            ratio = joint.clamp_min(tiny) / (pa[:, :, None] * pb[:, None]).clamp_min(tiny)
            mi = (joint * torch.log(ratio)).sum((1, 2))
            h = entropy(pa, 1) + entropy(pb, 1)
            best = torch.maximum(best, torch.where(h < 1e-12, 0.0, 2 * mi / h.clamp_min(1e-12)))
    return best.clamp(0, 1).view(n, 1, height, width)


def lmi_settings(paper_config: Path) -> list[dict]:
    """The default bins and sigma, and the paper config's."""
    diffusion = yaml.safe_load(paper_config.read_text())["diffusion"]
    return [{"bins": DEFAULT_BINS, "sigma": DEFAULT_SIGMA},
            {"bins": diffusion["lmi_bins"], "sigma": diffusion["lmi_sigma"]}]


def benchmark_inputs(slices_path: Path, batch: int, size: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """(anchor, other) pairs, (2, batch, 1, size, size) in [0, 1]: two batches of distinct training
    slices (the npz's "images", (n, 1, h, w) in [-1, 1]), and uniform noise."""
    if not slices_path.exists():
        raise SystemExit(f"{slices_path}: not found; run the default pipeline (snakemake) or pass --slices")
    images = np.load(slices_path)["images"]
    chosen = torch.randperm(len(images), generator=gen)[: 2 * batch].numpy()
    slices = F.interpolate(torch.from_numpy(images[chosen].astype(np.float32)), size=(size, size), mode="bilinear")
    return {"slices": to_unit(slices).view(2, batch, 1, size, size),
            "noise": torch.rand(2, batch, 1, size, size, generator=gen)}


def time_ms(fns: list, device: torch.device, repeats: int) -> list[float]:
    """Median wall time in ms of each fn() after one warm-up call each; the fns alternate, so that
    they share the load of this (shared) machine and their ratio is fair."""
    times = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            fn_times.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def measure(device: torch.device, size: int, args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    """CSV rows (less date and machine), one per LMI setting and input, for a batch of size x size images."""
    pairs = {name: pair.to(device) for name, pair in benchmark_inputs(args.slices, args.batch, size, gen).items()}
    cases = [(settings, name) for settings in lmi_settings(args.paper_config) for name in pairs]
    t = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
    cond = torch.rand(args.batch, 2, size, size, generator=gen).to(device)
    unet = UNet(image_size=size).to(device).eval()
    lmi_calls = [lambda s=settings, p=pairs[name]: local_mutual_information(*p, **s) for settings, name in cases]
    with torch.no_grad():
        unet_ms, *lmi_ms = time_ms([lambda: unet(pairs["noise"][1], t, cond), *lmi_calls], device, args.repeats)
    load = round(os.getloadavg()[0], 2)  # over the timings (this run's own threads included), not the reference's
    ref_size = min(size, args.reference_max_size)
    scale = (size / ref_size) ** 2
    rows = []
    for (settings, name), ms in zip(cases, lmi_ms):
        crop = pairs[name][..., :ref_size, :ref_size]
        [ref_ms] = time_ms([lambda: reference_lmi(*crop, **settings)], device, 1)
        rows.append({
            "device": "cpu" if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
            "batch": args.batch, "size": size, **settings,
            "lmi_ms": round(ms, 1), "unet_forward_ms": round(unet_ms, 1), "ratio": round(ms / unet_ms, 4),
            "reference_ms": round(ref_ms * scale, 1), "speedup_over_reference": round(ref_ms * scale / ms, 1),
            "reference_note": "measured" if scale == 1 else f"timed at {ref_size}x{ref_size}, scaled x{scale:g} (pixels)",
            "load_avg_1min": load, "input": name, "unet": UNET,
        })
    return rows


def check_against_reference(paper_config: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    small = torch.rand(2, 2, 1, 12, 12, generator=gen, dtype=torch.float64)
    for settings in lmi_settings(paper_config):
        error = (reference_lmi(*small, **settings) - local_mutual_information(*small, **settings)).abs().max().item()
        if error > 1e-5:
            raise SystemExit(f"reference and layer disagree by {error:.2e} on a 12 x 12 input ({settings})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-max-size", type=int, default=128,
                        help="time the reference at most at this size and extrapolate linearly in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--slices", type=Path, default=Path("results/diffusion/train_slices.npz"))
    parser.add_argument("--paper-config", type=Path, default=Path("config/paper.yaml"))
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/lmi_bins.csv"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    check_against_reference(args.paper_config)

    gen = torch.Generator().manual_seed(0)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    machine = f"{platform.platform()} / {os.cpu_count()} cpus / {torch.get_num_threads()} torch threads"
    rows = []
    for device in devices:
        for size in args.sizes:
            for row in measure(device, size, args, gen):
                rows.append({"date": datetime.date.today().isoformat(), "machine": machine} | row)
                print(", ".join(f"{k}={v}" for k, v in row.items() if k not in ("date", "machine", "unet")), flush=True)
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"{machine}: {len(rows)} rows appended to {args.out} (UNet: {UNET})")


if __name__ == "__main__":
    main()
