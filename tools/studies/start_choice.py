"""A start chosen by the target model: of the zero-shot maps of a source (CANDIDATES), the one the trained
diffusion model finds most likely, scored on a finished run.

"Most likely" is the lowest denoising loss: each candidate's brain slices are noised to a timestep t
(the same noise for every candidate, so the comparison is paired) and the model, with its LMI condition
zeroed (its unconditional mode: what a target image looks like, whatever the source), predicts the
noise; the loss is the mean squared error over the slices, averaged over `draws` noise draws. A map
that puts the tissues in the target's order and histogram should look most like a target image. No
labels, no Dice and no real target image are read: the choice is per case, from the source alone.

The translations from each start are not made here: they are the rows of tools/studies/fidelity_levers.py's
table (--levers: the run's midiffusion, whose start is atlas_match, and its start_* variants), so the
chosen start's Dice and corr are looked up there. A case whose chosen start has no translation in that
table is reported with NaN Dice and named in the output.

Writes one row per case, candidate and timestep (--out-csv) and, as Markdown (--out-md), the choice per
case and the mean Dice and corr of the chosen start's translation beside the default's per anatomy and
source. Usage:
  python tools/studies/start_choice.py --run ../midiffusion-runs/six_held_out/results \
      --levers results/tables/start_levers.csv --sources T2w PDw FLAIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.diffusion.model import LoadedModel, load_model
from midiffusion.diffusion.slices import slice_geometry, volume_to_slices
from midiffusion.io import InputError, atomic_path, check_mask, load_volume
from fidelity_levers import RUN_MODEL, Case, run_split

CANDIDATES = ("invert", "none", "atlas_map", "atlas_match")  # the maps of the source a start can be
# The choices scored: among every candidate, and between the two directions alone (the source negated or
# as it is, both on their own intensity scale), which asks only whether the model sees the tissue order.
CHOICES = {"all maps": CANDIDATES, "direction": ("invert", "none")}
# The translation of fidelity_levers' table that started from each candidate (t0 0.1, detail transfer r 1);
# `none` (the source as it is) was not translated there.
TRANSLATION_FROM = {"atlas_match": "midiffusion", "invert": "start_invert_t0.1+detail_r1",
                    "atlas_map": "start_atlas_map_t0.1+detail_r1"}
DEFAULT_START = "atlas_match"


@torch.inference_mode()
def denoising_loss(loaded: LoadedModel, slices: np.ndarray, t: int, draws: int = 4, seed: int = 0,
                   batch_size: int = 64) -> float:
    """Mean squared error of the model's unconditional noise prediction for `slices` (N, 1, S, S) in [-1, 1]
    noised to timestep t, over `draws` noise draws from `seed` (the same draws for any slices of that shape)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))
    total = 0.0
    for _ in range(draws):
        noise = torch.randn(images.shape, generator=generator)
        for start in range(0, len(images), batch_size):
            x0, eps = images[start:start + batch_size], noise[start:start + batch_size]
            steps = torch.full((len(x0),), t, dtype=torch.long)
            x_t = loaded.schedule.add_noise(x0.to(loaded.device), eps.to(loaded.device), steps.to(loaded.device))
            predicted = loaded.model(x_t, steps.to(loaded.device), None).float().cpu()
            total += float((predicted - eps).square().sum())
    return total / (draws * images.numel())


def choose(losses: dict[str, float]) -> str:
    """The candidate with the lowest denoising loss."""
    return min(losses, key=losses.__getitem__)


def case_losses(loaded: LoadedModel, case: Case, timesteps: list[int], draws: int) -> list[dict]:
    """One row per candidate and timestep: the denoising loss of the candidate's slices."""
    mask_path = case.preprocessed("brainmask")
    geometry = slice_geometry(check_mask(load_volume(mask_path).data, mask_path), loaded.config.image_size)
    rows = []
    for candidate in CANDIDATES:
        slices = volume_to_slices(load_volume(case.method_image(candidate)).data, geometry)
        rows += [{"subject": case.subject, "source": case.source, "candidate": candidate, "t": t,
                  "loss": denoising_loss(loaded, slices, t, draws)} for t in timesteps]
    return rows


def choices(losses: pd.DataFrame, levers: pd.DataFrame) -> pd.DataFrame:
    """Per case, timestep and choice (CHOICES): the chosen start and its translation's Dice and corr beside
    the default's."""
    scores = levers.set_index(["variant", "subject", "source"])[["anatomy", "dice", "corr"]]
    rows = []
    for (subject, source, t), group in losses.groupby(["subject", "source", "t"], sort=False):
        loss = dict(zip(group["candidate"], group["loss"]))
        default = scores.loc[(TRANSLATION_FROM[DEFAULT_START], subject, source)]
        for among, candidates in CHOICES.items():
            chosen = choose({c: loss[c] for c in candidates})
            key = (TRANSLATION_FROM.get(chosen, ""), subject, source)
            picked = scores.loc[key] if key in scores.index else pd.Series({"dice": np.nan, "corr": np.nan})
            rows.append({"anatomy": default["anatomy"], "subject": subject, "source": source, "t": t, "among": among,
                         "chosen": chosen, "dice": picked["dice"], "corr": picked["corr"],
                         "default dice": default["dice"], "default corr": default["corr"]})
    return pd.DataFrame(rows)


def markdown(chosen: pd.DataFrame) -> str:
    """The means per choice, anatomy, source and timestep, then the choice per case."""
    per_case = chosen.pivot_table(index=["anatomy", "subject", "source"], columns=["among", "t"], values="chosen",
                                  aggfunc="first")
    per_case.columns = [f"among {among}, t={t}" for among, t in per_case.columns]
    per_case = per_case.reset_index()
    grouped = chosen.groupby(["among", "anatomy", "source", "t"], sort=False)
    means = grouped[["dice", "corr", "default dice", "default corr"]].mean()
    means["chosen starts"] = grouped["chosen"].agg(lambda s: ", ".join(f"{k} {v}" for k, v in s.value_counts().items()))
    means = means.reset_index()
    means = means.assign(held_out=means["anatomy"] != TRAINING_ANATOMY).sort_values(["among", "held_out", "anatomy", "source", "t"])
    means = means.drop(columns="held_out")
    return "\n".join([
        "# A start chosen by the target model\n",
        "Per case, the zero-shot map of the source that the run's diffusion model denoises best at timestep t "
        "(its unconditional mode, the same noise for every candidate), among "
        + "; ".join(f"{among}: {', '.join(c)}" for among, c in CHOICES.items())
        + f", and the Dice and corr of the translation from that start beside the default's ({DEFAULT_START} "
        "start; NaN where no translation started from the chosen map). Made by tools/studies/start_choice.py "
        "from tools/studies/fidelity_levers.py's translations.\n",
        means.to_markdown(index=False, floatfmt=".3f"),
        "\n## Chosen start per case\n",
        per_case.to_markdown(index=False),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run's results folder")
    parser.add_argument("--levers", type=Path, required=True, help="fidelity_levers.py's CSV of that run")
    parser.add_argument("--sources", nargs="+", default=["T2w", "PDw", "FLAIR"])
    parser.add_argument("--timesteps", nargs="+", type=int, default=[99],
                        help="timesteps to score at (99: the default start t0 0.1 of 1,000)")
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--out-csv", type=Path, default=Path("results/tables/start_choice.csv"))
    parser.add_argument("--out-md", type=Path, default=Path("results/tables/start_choice.md"))
    args = parser.parse_args()
    loaded = load_model(args.run / RUN_MODEL, "cpu")
    levers = pd.read_csv(args.levers)
    subjects = [f"sub-{s.removeprefix('sub-')}" for s in run_split(args.run)["test"]]
    cases = [Case(subject, source, args.run) for subject in subjects for source in args.sources]
    missing = [str(p) for case in cases for p in case.missing(set(CANDIDATES))]
    if missing:
        raise InputError(f"the run lacks {', '.join(missing)}")
    rows = []
    for k, case in enumerate(cases, 1):
        scored = case_losses(loaded, case, args.timesteps, args.draws)
        first = {row["candidate"]: row["loss"] for row in scored if row["t"] == args.timesteps[0]}
        print(f"[{k}/{len(cases)}] {case.name}: {choose(first)} at t={args.timesteps[0]}", flush=True)
        rows += scored
    losses = pd.DataFrame(rows)
    chosen = choices(losses, levers)
    with atomic_path(args.out_csv) as tmp:
        losses.merge(chosen, on=["subject", "source", "t"]).to_csv(tmp, index=False, float_format="%.5f")
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(markdown(chosen))
    print(markdown(chosen))


if __name__ == "__main__":
    main()
