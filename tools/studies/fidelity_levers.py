"""Sampler variants (fidelity levers) scored on a finished default run: which sampler setting makes the
translations follow the source more closely, on the training anatomy and on held-out anatomy.

Each variant of VARIANTS is a set of `sampling` settings (config.SamplingConfig: an SDEdit start from a
zero-shot intensity map noised to start_t0, LMI gradient guidance, the guidance scale, averaging
samples). For each variant and test case (subject x source contrast) the run's model translates the
source (one sample unless the variant says otherwise, the default seed), timed: seconds per slice is
the wall time of the translation, model loading included, over the subject's brain slices. Then the
run's target nnU-Net segments every image in ONE prediction (its start-up is paid once), without
mirroring as the workflow does, and every case is scored as the workflow scores it (corr and SSIM
inside the brain mask against the real target, Dice of the segmentation against the labels).
Reference rows, not translated here: the run's own images of REFERENCES (the intensity maps a lever
must beat and midiffusion as the workflow made it); their seconds per slice come from the workflow's
benchmark files where present (its threads, not one).

Translations, segmentations and scores are cached in --work and reused when newer than their inputs,
so a rerun after an interruption continues, and adding subjects or variants computes only what is new.
Writes one row per variant and case (--out-csv), the means over subjects as Markdown (--out-md) and a
figure (--figure): corr against Dice per variant, and Dice and corr against the SDEdit start's t0.
Usage: python tools/studies/fidelity_levers.py [--run results] [--subjects 08 colin01] [--variants default ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from midiffusion.anatomy import TRAINING_ANATOMY
from midiffusion.cohort import read_split
from midiffusion.config import SamplingConfig
from midiffusion.io import InputError, atomic_path, load_volume
from midiffusion.layout import NNUNET_ROOT, RESULTS, SPLIT_FILE, TISSUE_LABELS
from midiffusion.metrics import evaluate_case
from midiffusion.diffusion.model import load_model
from midiffusion.diffusion.schedule import DDPMSchedule
from midiffusion.segment import NnunetDirs, segment_volumes
from midiffusion.diffusion.slices import slice_geometry
from midiffusion.diffusion.translate import translate_volume


RUN_MODEL = "diffusion/model.pt"  # the run's diffusion model, in its results folder
# The sampler the levers were measured against: the default before this study made the invert start
# the default (pure noise, classifier-free guidance 5). The variants change it, so the table stays
# reproducible whatever today's default is.
LEVER_BASE = SamplingConfig(start="noise", start_t0=0.5, guidance_scale=5.0, detail_radius=0)
# The sampler that the levers above made the default on 2026-12-02, which the detail transfer refines.
INVERT_START = {"start": "invert", "start_t0": 0.1, "guidance_scale": 1.0}
# That sampler with the detail transfer the levers below made the default on 2026-12-03.
DETAIL_DEFAULT = {**INVERT_START, "detail_radius": 1, "detail_eps": 0.001}


@dataclass(frozen=True)
class Variant:
    """A lever setting: its name in the tables and the `sampling` keys it changes from LEVER_BASE."""

    name: str
    settings: Mapping[str, Any]
    model: str = RUN_MODEL  # relative to the run's results folder: another training's model

    def config(self) -> SamplingConfig:
        return dataclasses.replace(LEVER_BASE, **self.settings)


VARIANTS = [
    Variant("default", {}),  # LEVER_BASE: the noise start, midiffusion as the workflow made it then
    # SDEdit: the zero-shot map noised to t0 (a fraction of T), then the default sampler from there.
    # t0 = 0 runs no step: the map through the slice grid and back, what the sampler starts from.
    Variant("sdedit_atlas_t0.0", {"start": "atlas_map", "start_t0": 0.0}),
    Variant("sdedit_atlas_t0.05", {"start": "atlas_map", "start_t0": 0.05}),
    Variant("sdedit_atlas_t0.1", {"start": "atlas_map", "start_t0": 0.1}),
    Variant("sdedit_atlas_t0.2", {"start": "atlas_map", "start_t0": 0.2}),
    Variant("sdedit_atlas_t0.3", {"start": "atlas_map", "start_t0": 0.3}),
    Variant("sdedit_atlas_t0.5", {"start": "atlas_map", "start_t0": 0.5}),
    Variant("sdedit_atlas_t0.7", {"start": "atlas_map", "start_t0": 0.7}),
    Variant("sdedit_invert_t0.5", {"start": "invert", "start_t0": 0.5}),
    Variant("sdedit_atlas_t0.5_eta0", {"start": "atlas_map", "start_t0": 0.5, "eta": 0.0}),
    # LMI gradient guidance: the RMS change of the predicted x0 per step. On one case (sub-08 T2w, 24
    # slices) 0.01-0.03 left corr as it was (+0.003), 0.1 lowered it by 0.01 and 0.3 by 0.1.
    Variant("lmi_grad_0.03", {"lmi_gradient_scale": 0.03}),
    Variant("lmi_grad_0.1", {"lmi_gradient_scale": 0.1}),
    Variant("sdedit_atlas_t0.5+lmi_grad_0.03", {"start": "atlas_map", "start_t0": 0.5, "lmi_gradient_scale": 0.03}),
    Variant("guidance_3", {"guidance_scale": 3.0}),
    Variant("samples_3", {"n_samples": 3}),  # the mean of 3 samples
    Variant("sdedit_atlas_t0.1_samples_3", {"start": "atlas_map", "start_t0": 0.1, "n_samples": 3}),
    # Even t0 = 0.05 (two steps) lowers corr from the map's: is it the guidance's extrapolation or the noise?
    Variant("sdedit_atlas_t0.1_guidance_1", {"start": "atlas_map", "start_t0": 0.1, "guidance_scale": 1.0}),
    Variant("sdedit_atlas_t0.1_eta0", {"start": "atlas_map", "start_t0": 0.1, "eta": 0.0}),
    # Refinements around the winner above (guidance 1: the conditional model alone, no extrapolation).
    Variant("guidance_1", {"guidance_scale": 1.0}),
    Variant("sdedit_atlas_t0.2_guidance_1", {"start": "atlas_map", "start_t0": 0.2, "guidance_scale": 1.0}),
    Variant("sdedit_atlas_t0.3_guidance_1", {"start": "atlas_map", "start_t0": 0.3, "guidance_scale": 1.0}),
    Variant("sdedit_invert_t0.1_guidance_1", INVERT_START),
    Variant("sdedit_invert_t0.2_guidance_1", {**INVERT_START, "start_t0": 0.2}),
    Variant("sdedit_invert_t0.3_guidance_1", {**INVERT_START, "start_t0": 0.3}),
    Variant("sdedit_invert_t0.0", {"start": "invert", "start_t0": 0.0}),  # invert through the slice grid
    # Detail transfer (midiffusion.diffusion.detail): the source's full-resolution detail put back by a local linear
    # fit over (2 r + 1)^3 voxels with ridge eps; on the invert start, and on the noise start.
    *(Variant(f"sdedit_invert_t0.1_guidance_1+detail_r{r}_eps{eps:g}", {**INVERT_START, "detail_radius": r,
                                                                       "detail_eps": eps})
      for r, eps in ((1, 0.01), (2, 0.01), (3, 0.01), (2, 0.001), (2, 0.1), (1, 0.001))),
    Variant("default+detail_r2_eps0.01", {"detail_radius": 2, "detail_eps": 0.01}),
    # Around the default of then (the invert start at t0 0.1 with the detail transfer r 1, eps 0.001): t0 and
    # the atlas_map start. (Models trained on deformed copies of the slices were measured here too, with a
    # training setting since removed: docs/history.md, "Training anatomy and the sampler start".)
    *(Variant(f"sdedit_invert_t{t0:g}_guidance_1+detail_r1_eps0.001", {**DETAIL_DEFAULT, "start_t0": t0})
      for t0 in (0.05, 0.2)),
    Variant("sdedit_atlas_t0.1_guidance_1+detail_r1_eps0.001", {**DETAIL_DEFAULT, "start": "atlas_map"}),
    # The sampler's other levers, measured again on top of that default: averaging samples, a deterministic
    # DDIM (eta 0), classifier-free guidance above 1, LMI gradient guidance.
    *(Variant(f"sdedit_invert_t0.1_guidance_1+detail_r1_eps0.001+{name}", {**DETAIL_DEFAULT, **settings})
      for name, settings in (("samples_3", {"n_samples": 3}), ("eta0", {"eta": 0.0}),
                             ("guidance_2", {"guidance_scale": 2.0}), ("lmi_grad_0.03", {"lmi_gradient_scale": 0.03}),
                             ("lmi_grad_0.1", {"lmi_gradient_scale": 0.1}))),
    # The native in-plane resolution: models trained on 96 x 96 slices (the brain's ~95 voxels at 2 mm; one more
    # UNet level, so self-attention stays at 12 x 12) and on 64 x 64 (attention at 16 x 16), beside the run's
    # (docs/history.md, "Native resolution"); without the detail transfer, which has little left to restore
    # at 96 (a row each with it), and at later starts: the same noise level destroys less of a finer image.
    *(Variant(f"native{size}_t0.1+detail_r1", DETAIL_DEFAULT, model=f"diffusion_{size}/model.pt") for size in (96, 64)),
    *(Variant(f"native{size}_t{t0:g}", {**DETAIL_DEFAULT, "detail_radius": 0, "start_t0": t0},
              model=f"diffusion_{size}/model.pt")
      for size in (96, 64) for t0 in (0.1, 0.2, 0.3)),
    # The 64 x 64 grid trained 1,500 steps instead of 2,500: its from-scratch run took 65.6 min on 2 cores, and
    # 1,000 fewer steps save about 6 of them (docs/history.md, "Native resolution").
    Variant("native64_steps1500_t0.1+detail_r1", DETAIL_DEFAULT, model="diffusion_64_steps1500/model.pt"),
    # Training length on the 64 x 64 default: its model continued from 2,500 to 5,000 steps (experiments/steps_5000_grid_64.yaml).
    *(Variant(f"steps5000_t{t0:g}+detail_r1", {**DETAIL_DEFAULT, "start_t0": t0},
              model="diffusion_64_steps5000/model.pt") for t0 in (0.1, 0.2)),
    # The default trained and sampled in bfloat16 on the CPU (diffusion.cpu_bfloat16): the same 2,500 steps.
    Variant("cpu_bf16_t0.1+detail_r1", DETAIL_DEFAULT, model="diffusion_cpu_bf16/model.pt"),
    # Starts that assume no direction of the source's map, measured with FLAIR beside T2w and PDw: the
    # atlas look-up's order with the target's histogram (atlas_match), the look-up itself, the invert start
    # for reference, the noise start (the paper's, with classifier-free guidance 5), and LMI gradient guidance.
    *(Variant(f"start_{start}_t{t0:g}+detail_r1", {**DETAIL_DEFAULT, "start": start, "start_t0": t0})
      for start in ("atlas_match", "atlas_map", "invert") for t0 in (0.1, 0.2)),
    Variant("start_atlas_match_t0.1+detail_r1+lmi_grad_0.03", {**DETAIL_DEFAULT, "start": "atlas_match",
                                                               "lmi_gradient_scale": 0.03}),
    Variant("start_noise_guidance5+detail_r1", {**DETAIL_DEFAULT, "start": "noise", "guidance_scale": 5.0}),
    # DIR (CSF and WM both dark, experiments/dir.yaml): later starts leave the model more of the image to
    # draw, and the detail transfer's local linear fit of the source cannot tell dark CSF from dark WM.
    *(Variant(f"start_atlas_match_t{t0:g}+detail_r{r}", {**DETAIL_DEFAULT, "start": "atlas_match", "start_t0": t0,
                                                         "detail_radius": r})
      for t0, r in ((0.3, 1), (0.5, 1), (0.1, 0), (0.3, 0))),
    Variant("start_noise_guidance5", {**DETAIL_DEFAULT, "start": "noise", "guidance_scale": 5.0, "detail_radius": 0}),
]
# The run's own images scored beside the levers: the real T1w through the slice grid (the ceiling of
# any translation on it), the best zero-shot intensity maps (#7) and midiffusion.
REFERENCES = ("grid_ceiling", "invert", "atlas_map", "atlas_match", "histmatch", "none", "midiffusion")
SUBJECT_METHODS = ("grid_ceiling",)  # one image per subject, not per source
MAPS = ("invert", "atlas_map", "atlas_match", "histmatch", "none")  # the zero-shot intensity maps a lever must beat
SETTINGS = ("start", "start_t0", "lmi_gradient_scale", "guidance_scale", "eta", "n_samples", "detail_radius",
            "detail_eps")
CLASSES = tuple(TISSUE_LABELS)  # CSF, GM, WM
COLUMNS = ["variant", "kind", "anatomy", "subject", "source", *SETTINGS, "model", "corr", "ssim", "psnr", "dice",
           *(f"dice_{c}" for c in CLASSES), "unet_calls", "seconds_per_slice", "load"]
TARGET = "T1w"


@dataclass(frozen=True)
class Case:
    """One test case: a subject's source contrast, with the run's files it needs."""

    subject: str  # sub-<id>
    source: str
    run: Path

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.source}"

    def preprocessed(self, name: str) -> Path:
        return self.run / "preprocessed" / self.subject / f"{name}.nii.gz"

    def method_image(self, method: str) -> Path:
        """A method's image of this case; the per-subject methods (SUBJECT_METHODS) have one per subject."""
        name = self.subject if method in SUBJECT_METHODS else self.name
        return self.run / "methods" / method / f"{name}.nii.gz"

    def missing(self, methods: set[str]) -> list[Path]:
        """The run's files this case lacks: its preprocessed images and the given methods' (SDEdit starts)."""
        paths = [self.preprocessed(n) for n in (f"{self.source}_norm", f"{TARGET}_norm", "brainmask", "labels")]
        return [path for path in paths + [self.method_image(m) for m in sorted(methods)] if not path.exists()]


def run_split(run: Path) -> dict:
    """The finished run's cohort: its test subjects and their anatomies (cohort.RunCohort.record)."""
    return read_split(run / SPLIT_FILE.relative_to(RESULTS))


def sidecar(path: Path) -> Path:
    """The JSON beside a .nii.gz file (sub-08_T2w.nii.gz -> sub-08_T2w.json)."""
    return path.with_name(path.name.removesuffix(".nii.gz") + ".json")


def fresh(path: Path, *inputs: Path) -> bool:
    """`path` exists and is no older than any of `inputs`."""
    return path.exists() and all(path.stat().st_mtime >= i.stat().st_mtime for i in inputs)


def translate_case(variant: Variant, case: Case, model: Path, work: Path) -> tuple[Path, bool]:
    """The variant's translation of the case (cached in work/images), with its timing beside it as JSON.
    Returns (image path, whether it was computed now)."""
    config = variant.config()
    image = work / "images" / variant.name / f"{case.name}.nii.gz"
    timing = sidecar(image)
    start = None if config.start == "noise" else case.method_image(config.start)
    inputs = [model, case.preprocessed(f"{case.source}_norm")] + ([start] if start else [])
    if fresh(image, *inputs) and fresh(timing, image):
        return image, False
    began = time.perf_counter()
    translate_volume(model, case.preprocessed("brainmask"), image, source_path=case.preprocessed(f"{case.source}_norm"),
                     start_path=start, config=config, device="cpu")
    seconds = time.perf_counter() - began
    slices = brain_slices(case.preprocessed("brainmask"))
    with atomic_path(timing) as tmp:
        tmp.write_text(json.dumps({"seconds": seconds, "slices": slices, "load": os.getloadavg()[0],
                                   "settings": dict(variant.settings)}))
    return image, True


def unet_calls(config: SamplingConfig | None, schedule: DDPMSchedule) -> float:
    """UNet evaluations per slice of a DDIM config (sampling.sample: the steps at or below the SDEdit
    start, two per classifier-free guided step, times the samples); NaN for an image not sampled here."""
    if config is None or config.sampler != "ddim":
        return float("nan")
    steps = schedule.ddim_timesteps(config.steps)
    if config.start != "noise":
        steps = steps[steps <= round(config.start_t0 * schedule.timesteps) - 1]
    return len(steps) * (1 if config.guidance_scale == 1 else 2) * config.n_samples


def brain_slices(mask_path: Path) -> int:
    """Axial slices holding brain: those the translation samples (slices.slice_geometry)."""
    return len(slice_geometry(load_volume(mask_path).data > 0, 1).z_indices)


def reference_seconds_per_slice(run: Path, method: str, case: Case) -> float:
    """The workflow's benchmark seconds of a reference image over the brain slices, NaN without one."""
    kind = "translate" if method == "midiffusion" else "baseline"
    stem = case.method_image(method).name.removesuffix(".nii.gz")
    tsv = run.resolve().parent / "benchmarks" / kind / method / f"{stem}.tsv"
    if not tsv.exists():
        return float("nan")
    return float(pd.read_csv(tsv, sep="\t")["s"].iloc[0]) / brain_slices(case.preprocessed("brainmask"))


def score(case: Case, image: Path, segmentation: Path, cache: Path) -> dict[str, float]:
    """corr, SSIM, PSNR and Dice (mean and per class) of one image, cached as JSON beside the segmentation."""
    if fresh(cache, image, segmentation):
        return json.loads(cache.read_text())
    metrics = evaluate_case(segmentation, case.preprocessed("labels"), image, case.preprocessed(f"{TARGET}_norm"),
                            case.preprocessed("brainmask"))
    scores = {"corr": metrics["corr"], "ssim": metrics["ssim"], "psnr": metrics["psnr"],
              "dice": metrics["dice"]["mean"], **{f"dice_{c}": metrics["dice"][c] for c in CLASSES}}
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps(scores))
    return scores


def settings_of(config: SamplingConfig | None) -> dict[str, Any]:
    """The config's lever settings (start_t0 NaN for the noise start, which does not read it); NaN for
    an image not sampled here."""
    if config is None:
        return {key: np.nan for key in SETTINGS}
    settings = {key: getattr(config, key) for key in SETTINGS}
    return settings | ({"start_t0": np.nan} if config.start == "noise" else {})


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over subjects per (variant, anatomy, source): the training anatomy first, then held-out
    anatomy; T2w before PDw; references, then the variants in the table's order."""
    order = {name: i for i, name in enumerate(dict.fromkeys(table["variant"]))}
    metrics = ["corr", "ssim", "dice", *(f"dice_{c}" for c in CLASSES), "unet_calls", "seconds_per_slice"]
    grouped = table.groupby(["anatomy", "source", "variant"], sort=False)
    means = grouped[metrics].mean().join(grouped["subject"].nunique().rename("n")).reset_index()
    means = means.assign(_anatomy=means["anatomy"] != TRAINING_ANATOMY, _source=means["source"] != "T2w",
                         _variant=means["variant"].map(order))
    means = means.sort_values(["_anatomy", "anatomy", "_source", "source", "_variant"])
    return means.drop(columns=["_anatomy", "_source", "_variant"]).reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The means table, then Dice and corr per variant with a column per anatomy and source."""
    means = summary(table)
    shown = means.rename(columns={"ssim": "SSIM", "dice": "Dice", "unet_calls": "UNet calls",
                                  "seconds_per_slice": "s/slice", **{f"dice_{c}": f"Dice {c}" for c in CLASSES}})
    text = [
        "# Sampler variants on a finished run\n",
        "Mean over the n test subjects of each anatomy; one sample per case unless the variant averages "
        "more (default seed). corr and SSIM inside the brain mask against the real T1w; Dice of the run's "
        "T1w nnU-Net (no mirroring) against the true labels, mean of CSF, GM and WM. UNet calls: network "
        "evaluations per slice, the exact cost (the LMI gradient adds an LMI backward per step besides). "
        "s/slice: wall seconds of the translation, model loading included, on one CPU thread over the brain "
        "slices, as loaded as the machine was (the CSV's machine and load columns): a rough cost. For the "
        "reference rows, the workflow's own benchmark (its threads). Made by tools/studies/fidelity_levers.py.\n",
        shown.to_markdown(index=False, floatfmt=".3f"),
    ]
    order = list(dict.fromkeys(means["variant"]))
    for metric, title in (("dice", "Dice"), ("corr", "corr")):
        pivot = means.pivot_table(index="variant", columns=["anatomy", "source"], values=metric, sort=False)
        pivot = pivot.reindex(order)
        pivot.columns = [f"{a} {s}" for a, s in pivot.columns]
        text += [f"\n## {title} per variant\n", pivot.reset_index().to_markdown(index=False, floatfmt=".3f")]
    text += ["\n## Best per anatomy and source\n", winners(table).to_markdown(index=False, floatfmt=".3f")]
    return "\n".join(text) + "\n"


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Per anatomy and source: the best intensity map (MAPS, by Dice) and the levers with the highest Dice
    and the highest corr, each with its mean Dice and corr. A start at t0 = 0 (no step runs: a map through
    the slice grid) is not counted as a lever."""
    means = summary(table)
    sampled = table[(table["kind"] == "lever") & (table["start_t0"] != 0)]["variant"]
    rows = []
    for (anatomy, source), group in means.groupby(["anatomy", "source"], sort=False):
        group = group.set_index("variant")
        levers = group[group.index.isin(sampled)]
        row = {"anatomy": anatomy, "source": source}
        for label, frame, metric in (("map", group[group.index.isin(MAPS)], "dice"),
                                     ("lever by Dice", levers, "dice"), ("lever by corr", levers, "corr")):
            if frame.empty:
                continue
            best = frame[metric].idxmax()
            row |= {label: best, f"{label}: Dice": frame.loc[best, "dice"], f"{label}: corr": frame.loc[best, "corr"]}
        rows.append(row)
    return pd.DataFrame(rows)


def sdedit_curve(table: pd.DataFrame, guidance_scale: float = LEVER_BASE.guidance_scale) -> pd.DataFrame:
    """Means per (anatomy, source, t0) along the atlas_map SDEdit start at one guidance scale, the other
    settings at LEVER_BASE: t0 = 0 is the map through the slice grid (no step runs, so any guidance
    scale's), t0 = 1 the noise start."""
    default = LEVER_BASE
    levers = table[table["kind"] == "lever"]
    others = ((levers["lmi_gradient_scale"] == default.lmi_gradient_scale) & (levers["eta"] == default.eta)
              & (levers["n_samples"] == default.n_samples) & (levers["detail_radius"].fillna(0) == 0))
    guided = others & (levers["guidance_scale"] == guidance_scale)
    sdedit = levers[(guided | (others & (levers["start_t0"] == 0))) & (levers["start"] == "atlas_map")]
    points = pd.concat([sdedit, levers[guided & (levers["start"] == "noise")].assign(start_t0=1.0)])
    return points.groupby(["anatomy", "source", "start_t0"])[["dice", "corr"]].mean().reset_index()


def plot(table: pd.DataFrame, out_path: Path) -> Path:
    """Left: corr against Dice per variant (one marker per anatomy and source mean: the anatomy's shape,
    T2w filled, PDw hollow). Middle and right: Dice and corr against the SDEdit start's t0, at the
    LEVER_BASE guidance scale (5) and without guidance (scale 1), only where the table has those variants."""
    means = summary(table)
    variants = list(dict.fromkeys(means["variant"]))
    anatomies = sorted(means["anatomy"].unique(), key=lambda a: (a != TRAINING_ANATOMY, a))
    shapes = dict(zip(anatomies, "o^sDv"))
    palette = colormaps["tab10"].colors
    if len(variants) > 10:
        palette = colormaps["tab20"].colors + colormaps["tab20b"].colors
    colours = {v: palette[i % len(palette)] for i, v in enumerate(variants)}
    default, unguided = LEVER_BASE.guidance_scale, 1.0
    curves = {scale: sdedit_curve(table, scale) for scale in (default, unguided)}
    with_curves = any(len(curve) > 1 for curve in curves.values())  # else only the left panel and its legend
    figure = Figure(figsize=(18, 8) if with_curves else (10, 8))
    ratios = [1.5, 0.35, 1, 1] if with_curves else [1.5, 0.6]
    left, legend, *curve_axes = figure.subplots(1, len(ratios), gridspec_kw={"width_ratios": ratios})
    legend.axis("off")
    for row in means.itertuples():
        filled = row.source == "T2w"
        left.plot(row.corr, row.dice, shapes[row.anatomy], color=colours[row.variant], markersize=8,
                  markerfacecolor=colours[row.variant] if filled else "none", markeredgewidth=1.5)
    left.set(xlabel="corr with the real T1w (brain)", ylabel="Dice (T1w nnU-Net)", title="Per method and lever")
    left.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[v], marker="o", linestyle="", label=v) for v in variants]
    handles += [Line2D([], [], color="black", marker=shapes[a], linestyle="", label=a) for a in anatomies]
    handles += [Line2D([], [], color="black", marker="o", linestyle="", label="T2w"),
                Line2D([], [], color="black", marker="o", markerfacecolor="none", linestyle="", label="PDw")]
    legend.legend(handles=handles, fontsize="small", loc="center", frameon=False)
    if with_curves:
        _plot_sdedit_curves(curves, means, anatomies, shapes, *curve_axes)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return out_path


def _plot_sdedit_curves(curves: dict[float, pd.DataFrame], means: pd.DataFrame, anatomies: list[str],
                        shapes: dict[str, str], middle: Any, right: Any) -> None:
    """Dice and corr against the SDEdit start's t0 per anatomy and source, one line style per guidance scale
    (curves: the default scale's, then the unguided one's)."""
    default, unguided = curves
    lines = sorted(curves[default].groupby(["anatomy", "source"]).groups,
                   key=lambda k: (anatomies.index(k[0]), k[1] != "T2w"))
    levels = means[means["variant"] == "atlas_map"].set_index(["anatomy", "source"])
    for i, (anatomy, source) in enumerate(lines):
        for scale, linestyle in ((default, "-"), (unguided, "--")):
            curve = curves[scale]
            group = curve[(curve["anatomy"] == anatomy) & (curve["source"] == source)]
            if len(group) < 2:
                continue
            for ax, metric in ((middle, "dice"), (right, "corr")):
                ax.plot(group["start_t0"], group[metric], color=f"C{i}", marker=shapes[anatomy], linestyle=linestyle)
        if (anatomy, source) in levels.index:  # the map at full resolution, before the grid
            for ax, metric in ((middle, "dice"), (right, "corr")):
                ax.axhline(levels.loc[(anatomy, source), metric], color=f"C{i}", linestyle=":", linewidth=1)
    for ax, label in ((middle, "Dice (T1w nnU-Net)"), (right, "corr with the real T1w")):
        ax.set(xlabel="SDEdit t0 (0: the map through the grid, 1: noise)", ylabel=label,
               title=f"{label.split(' ')[0]}, SDEdit from atlas_map", xlim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    keys = [Line2D([], [], color=f"C{i}", marker=shapes[a], label=f"{a} {s}") for i, (a, s) in enumerate(lines)]
    keys += [Line2D([], [], color="grey", linestyle="-", label=f"guidance {default:g} (default)"),
             Line2D([], [], color="grey", linestyle="--", label=f"guidance {unguided:g}"),
             Line2D([], [], color="grey", linestyle=":", label="atlas_map (full resolution)")]
    right.legend(handles=keys, fontsize="small", loc="lower left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results"), help="a finished default run's results folder")
    parser.add_argument("--subjects", nargs="+", help="ids (08, colin01; default: the test subjects)")
    parser.add_argument("--sources", nargs="+", default=["T2w", "PDw"])
    parser.add_argument("--variants", nargs="+", help=f"a subset of {[v.name for v in VARIANTS]}")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fidelity_levers",
                        help="cache of translations, segmentations and scores")
    parser.add_argument("--dataset-id", type=int, default=501)
    parser.add_argument("--trainer", default="nnUNetTrainer_midiffusion_quick")
    parser.add_argument("--configuration", default="2d")
    parser.add_argument("--out-csv", type=Path, default=Path("results/tables/fidelity_levers.csv"))
    parser.add_argument("--out-md", type=Path, default=Path("results/tables/fidelity_levers.md"))
    parser.add_argument("--figure", type=Path, default=Path("results/figures/fidelity_levers.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    known = {v.name: v for v in VARIANTS}
    unknown = sorted(set(args.variants or []) - set(known))
    if unknown:
        raise InputError(f"--variants: unknown {unknown}; expected some of {list(known)}")
    variants = [known[name] for name in args.variants] if args.variants else VARIANTS
    dirs = NnunetDirs(args.run / NNUNET_ROOT.relative_to(RESULTS))
    absent = sorted({str(args.run / v.model) for v in variants if not (args.run / v.model).exists()})
    if absent:
        raise InputError(f"no model {absent}: train it first (tools/studies/fidelity_levers.py, VARIANTS)")
    split = run_split(args.run)
    anatomies = split["anatomies"]  # {} without a held-out anatomy
    subjects = [f"sub-{s.removeprefix('sub-')}" for s in args.subjects or split["test"]]
    starts = {v.config().start for v in variants} - {"noise"}
    cases = []
    for case in (Case(subject, source, args.run) for subject in subjects for source in args.sources):
        missing = case.missing(starts)
        if missing:
            print(f"skip {case.name}: missing {', '.join(map(str, missing))}", flush=True)
        else:
            cases.append(case)
    if not cases:
        raise InputError("no test case has all its inputs")

    images: dict[tuple[str, Case], Path] = {}
    jobs = [(v, c) for v in variants for c in cases]
    for k, (variant, case) in enumerate(jobs, 1):
        image, computed = translate_case(variant, case, args.run / variant.model, args.work)
        images[variant.name, case] = image
        timing = json.loads(sidecar(image).read_text())
        print(f"[{k}/{len(jobs)}] {variant.name} {case.name}: {'translated' if computed else 'cached'}, "
              f"{timing['seconds']:.0f} s, {timing['seconds'] / timing['slices']:.2f} s/slice", flush=True)
    for method, case in ((m, c) for m in REFERENCES for c in cases):
        if case.method_image(method).exists():
            images[method, case] = case.method_image(method)
        else:
            print(f"no reference row {method} {case.name}: the run has no {case.method_image(method)}", flush=True)

    segmentations = {key: args.work / "segmentations" / key[0] / f"{key[1].name}.nii.gz" for key in images}
    todo = [(images[key], segmentations[key]) for key in images if not fresh(segmentations[key], images[key])]
    if todo:
        print(f"segmenting {len(todo)} images in one nnU-Net run", flush=True)
        began = time.perf_counter()
        segment_volumes(dirs, args.dataset_id, todo, configuration=args.configuration, trainer=args.trainer,
                        device="cpu", num_processes=1, mirroring=False)
        print(f"segmented in {time.perf_counter() - began:.0f} s", flush=True)

    schedule = load_model(args.run / RUN_MODEL, "cpu").schedule  # the variants' models share it
    rows = []
    for (name, case), image in sorted(images.items(), key=lambda item: item[0][0] not in REFERENCES):
        lever = name not in REFERENCES  # references first, in their order; then the levers in theirs
        config = known[name].config() if lever else SamplingConfig() if name == "midiffusion" else None
        if lever:
            timing = json.loads(sidecar(image).read_text())
            seconds_per_slice, load = timing["seconds"] / timing["slices"], timing.get("load", np.nan)
        else:
            seconds_per_slice, load = reference_seconds_per_slice(args.run, name, case), np.nan
        segmentation = segmentations[name, case]
        rows.append({"variant": name, "kind": "lever" if lever else "reference", "anatomy": anatomies.get(case.subject.removeprefix("sub-"), TRAINING_ANATOMY),
                     "subject": case.subject, "source": case.source, **settings_of(config),
                     "model": known[name].model if lever else RUN_MODEL if name == "midiffusion" else "",
                     **score(case, image, segmentation, sidecar(segmentation)),
                     "unet_calls": unet_calls(config, schedule), "seconds_per_slice": seconds_per_slice,
                     "load": load})
    table = pd.DataFrame(rows, columns=COLUMNS).assign(machine=f"{os.cpu_count()} cpus, 1 thread")
    with atomic_path(args.out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(markdown(table))
    plot(table, args.figure)
    print(summary(table).to_string(float_format=lambda x: f"{x:.3f}"), flush=True)


if __name__ == "__main__":
    main()
