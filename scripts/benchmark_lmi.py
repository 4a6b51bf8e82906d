"""Benchmark the LMI layer against one forward pass of the paper-size UNet and a plain reference.

Per device (CPU, and CUDA when present) and image size, times one LMI(anchor, x_t) call (the
per-sampling-step cost: LMI(anchor, anchor) is cached), one UNet forward on the same batch, and a
straightforward unfold-based vectorised implementation of the same definition. Prints the rows and
appends them to results/benchmarks/lmi.csv; load_avg_1min says how busy the shared machine was.

    python scripts/benchmark_lmi.py [--sizes 128 64] [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from midiffusion.io import append_csv_rows
from midiffusion.lmi import DEFAULT_BINS, DEFAULT_SIGMA, local_mutual_information
from midiffusion.unet import UNet

COLUMNS = ["date", "machine", "device", "batch", "size", "bins", "sigma", "lmi_ms", "unet_forward_ms", "ratio",
           "reference_ms", "speedup_over_reference", "reference_note", "load_avg_1min"]


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


def measure(device: torch.device, size: int, args: argparse.Namespace, gen: torch.Generator) -> dict:
    """One CSV row (less date and machine) for a batch of size x size images on `device`."""
    lmi_kwargs = {"bins": args.bins, "sigma": args.sigma}
    anchor, x_t = torch.rand(2, args.batch, 1, size, size, generator=gen).to(device)
    t = torch.randint(0, 1000, (args.batch,), generator=gen).to(device)
    cond = torch.rand(args.batch, 2, size, size, generator=gen).to(device)
    unet = UNet(image_size=size).to(device).eval()
    with torch.no_grad():
        unet_ms, lmi_ms = time_ms([lambda: unet(x_t, t, cond),
                                   lambda: local_mutual_information(anchor, x_t, **lmi_kwargs)], device, args.repeats)
    ref_size = min(size, args.reference_max_size)
    crop = (anchor[..., :ref_size, :ref_size], x_t[..., :ref_size, :ref_size])
    [ref_ms] = time_ms([lambda: reference_lmi(*crop, **lmi_kwargs)], device, 1)
    scale = (size / ref_size) ** 2
    return {
        "device": "cpu" if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        "batch": args.batch, "size": size, "bins": args.bins, "sigma": args.sigma,
        "lmi_ms": round(lmi_ms, 1), "unet_forward_ms": round(unet_ms, 1), "ratio": round(lmi_ms / unet_ms, 4),
        "reference_ms": round(ref_ms * scale, 1), "speedup_over_reference": round(ref_ms * scale / lmi_ms, 1),
        "reference_note": "measured" if scale == 1 else f"timed at {ref_size}x{ref_size}, scaled x{scale:g} (pixels)",
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS)
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-max-size", type=int, default=128,
                        help="time the reference at most at this size and extrapolate linearly in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/lmi.csv"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    small = torch.rand(2, 2, 1, 12, 12, generator=gen, dtype=torch.float64)
    error = (reference_lmi(*small) - local_mutual_information(*small)).abs().max().item()
    if error > 1e-5:
        raise SystemExit(f"reference and layer disagree by {error:.2e} on a 12 x 12 input")

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    machine = f"{platform.platform()} / {os.cpu_count()} cpus / {torch.get_num_threads()} torch threads"
    rows = []
    for device in devices:
        for size in args.sizes:
            row = {"date": datetime.date.today().isoformat(), "machine": machine} | measure(device, size, args, gen)
            rows.append(row)
            print(", ".join(f"{k}={v}" for k, v in row.items() if k not in ("date", "machine")), flush=True)
    append_csv_rows(args.out, rows, COLUMNS)
    print(f"{machine}: {len(rows)} rows appended to {args.out}")


if __name__ == "__main__":
    main()
