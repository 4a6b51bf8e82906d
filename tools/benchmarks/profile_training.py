"""Where a diffusion training step's time goes, to know which part to make cheaper: the default
config's training on the default run's own slices, under cProfile, split into the step's parts.

Parts (seconds per step and share of the step; one-off set-up apart, in seconds per run): the anchors (anchor contrast augmentation, with its
LMI of the remapped anchors), the LMI condition, the UNet forward, the backward pass, gradient
clipping, the Adam step, the EMA update, checkpoints, and the rest (batch drawing, noise, loss).
cProfile's own overhead is small here: the time is
in torch's kernels, which it does not instrument.

    .venv/bin/python tools/benchmarks/profile_training.py [--slices results/diffusion/train_slices.npz]
        [--steps 100] [--threads 2] [--out results/benchmarks/training_profile.csv]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import datetime
import io
import os
import pstats
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml

from midiffusion.config import DiffusionConfig
from midiffusion.io import atomic_path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # machine.py, shared with scripts/
from machine import machine_description  # noqa: E402

# part -> (file suffix, function name) of the function whose cumulative time is that part
PARTS = {
    "anchors (contrast augmentation)": ("midiffusion/diffusion/train.py", "_anchors"),
    "LMI condition": ("midiffusion/diffusion/train.py", "training_condition"),
    "UNet forward": ("midiffusion/diffusion/unet.py", "forward"),
    "backward": ("torch/_tensor.py", "backward"),
    "gradient clipping": ("torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    "Adam step": ("torch/optim/adam.py", "step"),
    "EMA update": ("midiffusion/diffusion/train.py", "_update_ema"),
    "checkpoints": ("midiffusion/diffusion/train.py", "_save_checkpoint"),
}
# once per run, not per step: left out of the step's time and reported apart
ONCE = {
    "self-LMI cache": ("midiffusion/diffusion/train.py", "self_lmi_cache"),
    "slices": ("midiffusion/diffusion/train.py", "load_slices"),
    "model set-up": ("midiffusion/diffusion/train.py", "_new_run"),
    "loss curve": ("midiffusion/diffusion/train.py", "_write_losses"),
    "final model": ("midiffusion/diffusion/model.py", "save_model"),
}


def cumulative_seconds(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative time of the outermost calls of a function (the largest entry: nested calls of the
    same function, such as the UNet's inner forwards, are inside it)."""
    times = [value[3] for (path, _, function), value in stats.stats.items()
             if function == name and path.endswith(suffix)]
    return max(times, default=0.0)


def current_load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def itk_threads() -> str:
    return f"ITK threads {os.environ.get('ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS', 'all')}"


def append_csv_rows(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """Append `rows` to the CSV at `path` (the header first when the file is new), atomically."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")  # "\n" as read_text gives back
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(old + buffer.getvalue())


def write_benchmark(table: pd.DataFrame, out: Path, machine: str, append: bool = False) -> None:
    """The table, with the date and the machine (machine_description) as its first columns, written
    atomically and printed; with `append`, after the rows already in `out`."""
    table.insert(0, "machine", machine)
    table.insert(0, "date", datetime.date.today().isoformat())
    if append and out.exists():
        table = pd.concat([pd.read_csv(out, dtype=str), table], ignore_index=True)  # old rows as written
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))


def profile(slices: Path, steps: int, config: DiffusionConfig) -> pd.DataFrame:
    from midiffusion.diffusion.train import train

    with tempfile.TemporaryDirectory() as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        train(slices, Path(tmp), config, progress=False)
        profiler.disable()
    stats = pstats.Stats(profiler)
    once = {part: cumulative_seconds(stats, *where) for part, where in ONCE.items()}
    step_total = (cumulative_seconds(stats, "midiffusion/diffusion/train.py", "train") - sum(once.values())) / steps
    parts = {part: cumulative_seconds(stats, *where) / steps for part, where in PARTS.items()}
    parts["rest (batch, noise, loss)"] = step_total - sum(parts.values())
    rows = [{"part": part, "seconds": round(s, 4), "share_of_step": round(s / step_total, 3)} for part, s in parts.items()]
    rows.append({"part": "step total", "seconds": round(step_total, 4), "share_of_step": 1.0})
    rows += [{"part": f"{part} (once per run)", "seconds": round(s, 2), "share_of_step": float("nan")}
             for part, s in once.items()]
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=Path, default=Path("results/diffusion/train_slices.npz"))
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/training_profile.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text()) or {}
    section, size = config.get("diffusion", {}), config.get("slices", {}).get("size")
    values = {**section, **({"image_size": size} if size else {}), "steps": args.steps,
              "checkpoint_every": args.steps, "device": "cpu"}
    table = profile(args.slices, args.steps, DiffusionConfig.from_dict(values))
    table.insert(0, "threads", args.threads)
    write_benchmark(table, args.out, machine_description(current_load()))


if __name__ == "__main__":
    main()
