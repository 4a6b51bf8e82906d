"""Evaluation metrics: Dice per tissue class and image quality (PSNR, SSIM, MAE, Pearson correlation)
inside the brain mask.

Conventions:
- Labels are integers 0 background, 1 CSF, 2 GM, 3 WM.
- Images are in the normalised space [-1, 1] with background -1, so the default data range is 2.
- Dice of a class absent from both prediction and truth is NaN (undefined, skipped by the mean);
  a class present in only one of them has Dice 0.
- PSNR of identical images is +inf (not capped), so that a perfect match is never mistaken for a
  measurement; pandas and the tables report it as inf.
- The correlation ("corr") is NaN when either image is constant inside the mask (undefined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from skimage.metrics import structural_similarity

from midiffusion.baselines import binned_means, intensity_bins
from midiffusion.io import InputError, check_mask, check_same_grid, load_volume
from midiffusion.layout import BACKGROUND, TISSUE_CLASSES
SSIM_WINDOW = 7  # skimage's default uniform window, here a 7 x 7 x 7 cube
ID_COLUMNS = ("subject", "source", "method")
LONG_COLUMNS = (*ID_COLUMNS, "metric", "class", "value")


def _check_shapes(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    if first.shape != second.shape:
        raise InputError(f"{names[0]} shape {first.shape} does not match {names[1]} shape {second.shape}")


def dice_per_class(
    pred: np.ndarray, truth: np.ndarray, classes: Mapping[int, str] = TISSUE_CLASSES
) -> dict[str, float]:
    """Dice 2|P∩T| / (|P| + |T|) per class of two label maps of the same shape (any dimension).

    Returns {class name: Dice} plus "mean", the mean over the classes whose Dice is defined.
    A class absent from both maps gives NaN (undefined); absent from one only gives 0.
    The mean is NaN only when every class is NaN.
    """
    _check_shapes(pred, truth, ("prediction", "truth"))
    pred = np.rint(pred).astype(np.int64)  # labels loaded as float32 by load_volume
    truth = np.rint(truth).astype(np.int64)
    scores: dict[str, float] = {}
    for label, name in classes.items():
        in_pred, in_truth = pred == label, truth == label
        total = int(in_pred.sum()) + int(in_truth.sum())
        overlap = int(np.logical_and(in_pred, in_truth).sum())
        scores[name] = 2.0 * overlap / total if total else float("nan")
    defined = [value for value in scores.values() if not np.isnan(value)]
    scores["mean"] = float(np.mean(defined)) if defined else float("nan")
    return scores


def intensity_bound_dice(
    image: np.ndarray, labels: np.ndarray, mask: np.ndarray, bins: int = 64,
    classes: Mapping[int, str] = TISSUE_CLASSES,
) -> dict[str, float]:
    """How much tissue information a contrast's intensities carry: the Dice per class of the best
    voxelwise intensity classifier, the one that gives every intensity bin (of `bins` over the
    normalised range [-1, 1]) the tissue class most frequent in it, inside the brain mask.

    It reads the labels of the image it classifies, so it is optimistic: an upper bound for any
    method that maps intensities voxel by voxel (histogram matching, a perfect intensity
    translation), though not for one that also uses spatial context. Comparing a source contrast's
    bound with the target's says how much of the oracle's Dice that source can support.
    """
    _check_shapes(image, labels, ("image", "labels"))
    _check_shapes(image, mask, ("image", "mask"))
    inside = mask > 0
    truth = np.where(inside, np.rint(labels).astype(np.int64), 0)
    codes = sorted(classes)
    index = intensity_bins(image[inside], bins)
    counts = np.stack([np.bincount(index[truth[inside] == code], minlength=bins) for code in codes])
    pred = np.zeros_like(truth)
    pred[inside] = np.asarray(codes)[counts.argmax(axis=0)][index]
    return dice_per_class(pred, truth, classes)


def intensity_bound_corr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray, bins: int = 64) -> float:
    """How well any voxelwise intensity map of `image` can follow `reference`: Pearson's r, inside the
    brain mask, of the best such map, the mean of `reference` in each of `bins` intensity bins of
    `image` (over [-1, 1]). It reads the reference, so it is optimistic: an upper bound of the
    correlation of `invert`, `atlas_map` or any other intensity translation, though not of one that
    also uses spatial context (the diffusion model)."""
    _check_shapes(image, reference, ("image", "reference"))
    _check_shapes(image, mask, ("image", "mask"))
    inside = mask > 0
    index = intensity_bins(image[inside], bins)
    target = reference[inside].astype(np.float64)
    _, (means,) = binned_means(index, bins, target)
    return pearson_correlation(means[index], target)


def image_metrics(
    image: np.ndarray, reference: np.ndarray, mask: np.ndarray, data_range: float = 2.0
) -> dict[str, float]:
    """PSNR (dB), SSIM, MAE and Pearson correlation of `image` against `reference` inside the brain `mask`.

    image, reference, mask: (X, Y, Z) arrays on the same grid; images in [-1, 1] (not clipped).
    PSNR = 10 log10(data_range^2 / MSE) over the mask voxels, +inf for identical images.
    SSIM: skimage's SSIM map on the whole volume (7^3 uniform window), averaged over the mask.
    corr: Pearson's r of the mask voxels, in [-1, 1]: insensitive to a global gain and offset, so it
    tells a translation with the right structure on the wrong scale from one with the wrong structure.
    Voxels outside the mask are set to the background (-1) in both images first, so they cannot
    leak into the SSIM of mask voxels near the brain edge: values outside the mask never matter.
    """
    _check_shapes(image, reference, ("image", "reference"))
    _check_shapes(image, mask, ("image", "mask"))
    if min(image.shape) < SSIM_WINDOW:
        raise InputError(f"image shape {image.shape}: every side must be >= {SSIM_WINDOW} voxels for SSIM")
    inside = check_mask(mask, "mask")
    image = np.where(inside, image, BACKGROUND).astype(np.float64)
    reference = np.where(inside, reference, BACKGROUND).astype(np.float64)
    error = image[inside] - reference[inside]
    mse = float(np.mean(error**2))
    psnr = float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))
    _, ssim_map = structural_similarity(
        image, reference, win_size=SSIM_WINDOW, data_range=data_range, full=True
    )
    return {
        "psnr": psnr,
        "ssim": float(ssim_map[inside].mean()),
        "mae": float(np.abs(error).mean()),
        "corr": pearson_correlation(image[inside], reference[inside]),
    }


def pearson_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson's r of two arrays of the same shape (all their values); NaN when either is constant."""
    _check_shapes(first, second, ("first", "second"))
    a, b = (np.asarray(x, dtype=np.float64).ravel() for x in (first, second))
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / norm) if norm > 0 else float("nan")


def evaluate_case(
    segmentation_path: str | Path,
    labels_path: str | Path,
    image_path: str | Path,
    reference_path: str | Path,
    mask_path: str | Path,
) -> dict[str, Any]:
    """Metrics of one translated (or baseline) image of one test subject.

    segmentation_path: the nnU-Net labels predicted on the image; labels_path: the ground truth;
    image_path: the image given to nnU-Net; reference_path: the real target image; mask_path:
    the brain mask. All must share one grid (InputError naming the file otherwise).
    Returns {"dice": {"CSF", "GM", "WM", "mean"}, "psnr", "ssim", "mae", "corr"}; the caller adds
    subject, source and method before collect_metrics.
    """
    paths = (segmentation_path, labels_path, image_path, reference_path, mask_path)
    segmentation, labels, image, reference, mask = volumes = [load_volume(path) for path in paths]
    check_same_grid(volumes)
    check_mask(mask.data, mask.path)
    return {
        "dice": dice_per_class(segmentation.data, labels.data),
        **image_metrics(image.data, reference.data, mask.data),
    }


def _long_records(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per metric (and class, for nested metrics such as Dice) of one row."""
    missing = [key for key in ID_COLUMNS if key not in row]
    if missing:
        raise InputError(f"metrics row {dict(row)!r}: missing {', '.join(missing)}")
    ids = {key: row[key] for key in ID_COLUMNS}
    records = []
    for metric, value in row.items():
        if metric in ID_COLUMNS:
            continue
        per_class = value if isinstance(value, Mapping) else {"": value}
        for name, score in per_class.items():
            records.append({**ids, "metric": metric, "class": name, "value": float(score)})
    return records


def collect_metrics(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Long table of many evaluate_case results.

    rows: dicts with subject, source, method and metrics, each either a number or a
    {class: number} dict (Dice). Returns columns subject, source, method, metric, class
    ("CSF"/"GM"/"WM"/"mean", or "" for image metrics), value; one row per number.
    """
    records = [record for row in rows for record in _long_records(row)]
    return pd.DataFrame.from_records(records, columns=list(LONG_COLUMNS))
