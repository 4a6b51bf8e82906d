"""Preprocessing with ANTsPy: N4 bias correction, brain extraction, registration into the target space,
intensity normalisation, and the registration error on the phantom where the true misalignment is known."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping

import ants
import nibabel as nib
import numpy as np

from .io import InputError, Volume, atomic_path, check_mask, check_same_grid, load_volume, read_json, save_volume, write_json
from .metrics import dice_per_class
from .head import PROTOCOLS, tissues_by_brightness
from .intensity import normalise
from .template import reference_head


# ANTs seeds its registrations' random sampling from the clock unless ANTS_RANDOM_SEED is set: the same
# subject preprocessed twice got brain masks 0.2 % of voxels apart and label Dice 0.820 against 0.824.
# A fixed seed (with one ITK thread, as the workflow runs it) makes preprocessing reproducible; a value
# the user sets wins.
os.environ.setdefault("ANTS_RANDOM_SEED", "1")

Registration = Literal["Rigid", "Affine"]
BrainExtraction = Literal["template", "labels"]


@dataclass
class SubjectImages:
    """One subject's raw inputs: target contrast, source contrasts, optional labels and known misalignment."""

    subject: str
    target: str
    images: dict[str, Path]  # contrast -> NIfTI path, the target included
    labels: Path | None = None
    misalignment: Path | None = None  # phantom only: JSON with target_to_source matrices


def to_ants(data: np.ndarray, affine: np.ndarray) -> ants.ANTsImage:
    """An ANTs image of a voxel array and its RAS affine (through nibabel, which converts to ITK's LPS)."""
    return ants.from_nibabel_nifti(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine))


def n4(image: ants.ANTsImage) -> ants.ANTsImage:
    """N4 bias field correction (on a positive copy: N4 needs strictly positive intensities)."""
    shifted = image - image.min() + 1e-3
    return ants.n4_bias_field_correction(shifted, shrink_factor=4)


@dataclass
class ExtractedBrain:
    """Brain extraction's results on the target grid (X, Y, Z): the brain mask (bool), the reference
    head registered to the target (float32, the reference's own intensity units, 0 where the warped
    reference does not reach), which the atlas_map baseline fits its intensity map on, and the
    reference's CSF, GM and WM partial volumes warped the same way (3, X, Y, Z) float32: the tissue
    priors of tissue_labels."""

    mask: np.ndarray
    template: np.ndarray
    tissue_priors: np.ndarray


# ants.registration's settings for brain extraction. CC suits the same-contrast reference; the
# full-resolution level aligns the cortex the tissue priors need. CC radius 1 takes half the time of
# radius 2 with the same tissue labels; fewer levels or iterations cost label Dice (docs/hardware.md,
# tools/benchmarks/benchmark_brain_extraction.py).
BRAIN_EXTRACTION_SYN = {
    "type_of_transform": "SyN", "syn_metric": "CC", "syn_sampling": 1, "reg_iterations": (40, 20, 10),
}


def extract_brain(
    target: ants.ANTsImage, contrast: str, voxel_mm: float, registration: dict | None = None,
    template_contrast: str | None = None,
) -> ExtractedBrain:
    """Brain mask of the target image: a head-and-brain reference image of the same contrast, made from
    the ICBM152 template (template.reference_head; for a contrast the head model does not render, the T1w
    one with SyN's Mattes mutual information instead of CC), is registered to it (affine then SyN; `registration`
    replaces BRAIN_EXTRACTION_SYN's ants.registration settings) and the reference's brain is warped back.
    The warped reference image (or, with `template_contrast`, the same head's image of that contrast) and
    tissue maps come with it, from the same registration."""
    settings = registration or BRAIN_EXTRACTION_SYN
    if contrast not in PROTOCOLS:  # no same-contrast reference: the T1w one, by a contrast-agnostic metric
        contrast, settings = "T1w", {**settings, "syn_metric": "mattes"}
    reference_voxel_mm = max(1.0, float(round(voxel_mm)))
    reference = reference_head(reference_voxel_mm, contrast)
    moving = to_ants(reference.image, reference.affine)
    with tempfile.TemporaryDirectory() as tmp:
        reg = ants.registration(target, moving, outprefix=f"{tmp}/tpl_", **settings)

        def warp(data: np.ndarray) -> np.ndarray:
            moved = ants.apply_transforms(target, to_ants(data, reference.affine), reg["fwdtransforms"])
            return moved.numpy().astype(np.float32)

        brain = warp(reference.brain)
        priors = np.stack([warp(tissue) for tissue in reference.tissues])
        if template_contrast in (None, contrast):
            template = reg["warpedmovout"].numpy().astype(np.float32)
        else:  # the same head in another contrast, moved by the same registration
            template = warp(reference_head(reference_voxel_mm, template_contrast).image)
    return ExtractedBrain(brain > 0.5, template, priors)


def correct_and_extract(
    images: Mapping[str, Volume], target: str, voxel_mm: float, *, use_n4: bool = True, extract: bool = True,
    template_contrast: str | None = None,
) -> tuple[dict[str, ants.ANTsImage], ExtractedBrain | None]:
    """The chain every way in shares (the workflow's preprocessing, one scan, the real-contrast check, the
    held-out anatomy): N4 bias field correction of each image (with use_n4), then brain extraction of the
    target-contrast image by the reference head (extract_brain; None without `extract`)."""
    corrected = {contrast: to_ants(volume.data, volume.affine) for contrast, volume in images.items()}
    if use_n4:
        corrected = {contrast: n4(image) for contrast, image in corrected.items()}
    if not extract:
        return corrected, None
    return corrected, extract_brain(corrected[target], target, voxel_mm, template_contrast=template_contrast)


# Measured in tools/studies/real_head_labels.py (docs/method.md, "Tissue labels").
PRIOR_SD = 0.5
CLIP_PERCENTILES = (1.0, 99.0)


def atropos_labels(image: ants.ANTsImage, mask: np.ndarray, contrast: str) -> np.ndarray:
    """3-class tissue labels (1 CSF, 2 GM, 3 WM; 0 outside the mask) by ANTs Atropos (k-means
    initialisation, MRF smoothing) of the N4-corrected target image inside the brain mask: the
    labels of a subject without tissue priors (brain_extraction "labels")."""
    mask_image = image.new_image_like(mask.astype(np.float32))
    with _private_tempdir():
        result = ants.atropos(a=image, x=mask_image, i="Kmeans[3]", m="[0.2,1x1x1]", c="[5,0]")
    classes = result["segmentation"].numpy().astype(np.uint8)
    labels = np.zeros_like(classes)
    # Atropos orders its classes by mean intensity; which tissue is darkest depends on the contrast.
    for atropos_class, tissue in enumerate(tissues_by_brightness(contrast), start=1):
        labels[classes == atropos_class] = tissue
    return labels


def winsorise(data: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Clip to the brain's intensity percentiles, so that a few bright (fat, vessel) or dark (bone)
    voxels left in the mask weigh no more than the brightest or darkest tissue."""
    low, high = np.percentile(data[mask], percentiles)
    return np.clip(data, low, high)


def _normalised_priors(priors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Class fractions (3, X, Y, Z) summing to 1 inside the mask, a little of each class everywhere:
    the warped priors fall short of 1 where the mask reaches beyond the template's brain."""
    floored = np.clip(priors, 0.0, 1.0) + 0.01
    return np.where(mask, floored / floored.sum(axis=0), 0.0).astype(np.float32)


def tissue_fractions(image: np.ndarray, mask: np.ndarray, priors: np.ndarray, prior_sd: float = PRIOR_SD) -> np.ndarray:
    """CSF, GM and WM fractions (3, X, Y, Z) float32 of the N4-corrected target image (X, Y, Z), 0 outside
    the mask: the tissue fractions p of the registered template (priors, 3 x X x Y x Z: CSF, GM, WM,
    e.g. ExtractedBrain.tissue_priors) corrected by each voxel's intensity.

    Linear partial-volume model: intensity y = f . mu + noise (sd sigma), tissue fractions f ~ p with sd
    `prior_sd` (tau). The class means mu are fitted to all brain voxels at once (least squares of
    y on p), so no class can be taken over by a few bright or dark voxels, and y is winsorised first.
    The MAP fractions move p along d = mu - mean(mu), the one direction the intensity measures:
    f = p + d (y - p . mu) / (|d|^2 + sigma^2 / tau^2), sigma the residual sd. f is not held
    non-negative here (docs/method.md, "Tissue labels", measures both). The fitted means order the
    tissues, so any contrast works.
    """
    inside = mask.astype(bool)
    intensity = winsorise(image, inside, CLIP_PERCENTILES)[inside]
    prior = _normalised_priors(priors, inside)[:, inside]
    means, *_ = np.linalg.lstsq(prior.T, intensity, rcond=None)
    residual = intensity - means @ prior
    direction = means - means.mean()
    gain = 1.0 / (direction @ direction + (residual.std() / prior_sd) ** 2)
    fractions = np.zeros((3, *mask.shape), np.float32)
    fractions[:, inside] = prior + direction[:, None] * (gain * residual)
    return fractions


def tissue_labels(image: np.ndarray, mask: np.ndarray, priors: np.ndarray, prior_sd: float = PRIOR_SD) -> np.ndarray:
    """3-class tissue labels (1 CSF, 2 GM, 3 WM; 0 outside the mask): the largest of tissue_fractions."""
    inside = mask.astype(bool)
    labels = np.zeros(mask.shape, np.uint8)
    labels[inside] = tissue_fractions(image, inside, priors, prior_sd)[:, inside].argmax(axis=0) + 1
    return labels


@contextlib.contextmanager
def _private_tempdir() -> Iterator[None]:
    """Python's temp folder points to a private one for the block and is removed after it:
    ants.atropos writes its probability images there (tempfile.mktemp) and never deletes them."""
    with tempfile.TemporaryDirectory(prefix="midiffusion-ants-") as folder:
        previous, tempfile.tempdir = tempfile.tempdir, folder
        try:
            yield
        finally:
            tempfile.tempdir = previous


def _lps_to_ras(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, -1.0, 1.0])


def registration_error_mm(
    transform_path: Path, target_to_source: np.ndarray, mask: np.ndarray, affine: np.ndarray
) -> dict[str, float]:
    """Mean displacement error (mm) inside the brain before and after registration.

    `target_to_source` (4x4, RAS mm) maps a target point to where the same anatomy lies in the source image.
    ANTs' forward transform (fixed = target, moving = source) maps target points to source points in LPS.
    """
    voxels = np.argwhere(mask)
    ras = voxels @ affine[:3, :3].T + affine[:3, 3]
    truth = ras @ target_to_source[:3, :3].T + target_to_source[:3, 3]
    transform = ants.read_transform(str(transform_path))
    lps = _lps_to_ras(ras)
    estimated = _lps_to_ras(np.array([transform.apply_to_point(p) for p in lps[:: max(1, len(lps) // 20000)]]))
    sampled = truth[:: max(1, len(lps) // 20000)]
    return {
        "error_before_mm": float(np.linalg.norm(ras - truth, axis=1).mean()),
        "error_after_mm": float(np.linalg.norm(estimated - sampled, axis=1).mean()),
    }


def preprocess_subject(
    inputs: SubjectImages,
    out_dir: Path,
    *,
    registration: Registration = "Rigid",
    brain_extraction: BrainExtraction = "template",
    use_n4: bool = True,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, float]:
    """Preprocess one subject into `out_dir` (all on the target grid): the target (preprocess_target),
    then each source contrast registered to it (register_source). Every source is read and checked before
    the target's compute.

    Returns the QC values of both (also in qc.json and <source>_qc.json)."""
    sources = {c: path for c, path in inputs.images.items() if c != inputs.target}
    for path in sources.values():
        load_volume(path)  # a bad source stops the subject before any of its compute
    qc = preprocess_target(inputs, out_dir, brain_extraction=brain_extraction, use_n4=use_n4, percentiles=percentiles)
    for contrast, path in sources.items():
        qc.update(register_source(inputs.subject, contrast, path, out_dir, inputs.target, registration=registration,
                                  use_n4=use_n4, percentiles=percentiles, misalignment=inputs.misalignment))
    return qc


def preprocess_target(
    inputs: SubjectImages,
    out_dir: Path,
    *,
    brain_extraction: BrainExtraction = "template",
    use_n4: bool = True,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, float]:
    """Preprocess a subject's target-contrast image (inputs.images[inputs.target]; other contrasts are
    ignored) into `out_dir`, on its own grid reoriented to RAS so that axis 2 is axial:

    <target>.nii.gz (N4-corrected), <target>_norm.nii.gz (normalised, skull-stripped, [-1, 1]),
    brainmask.nii.gz, labels.nii.gz (the given labels, else tissue_labels), qc.json, and with
    brain_extraction "template" only, template.nii.gz: the target-contrast reference head that brain
    extraction registered to the target image (not normalised; the atlas_map baseline's input). With
    "labels" nothing is registered to the template, so atlas_map needs "template".

    Returns the QC values also written to qc.json: where true labels are given, the Dice of the labels
    real data would get against them ("atropos_dice_<class>").
    """
    if inputs.target not in inputs.images:
        raise InputError(f"subject {inputs.subject}: target contrast {inputs.target} missing")
    target_volume = load_volume(inputs.images[inputs.target], canonical=True)
    labels = load_volume(inputs.labels, canonical=True) if inputs.labels else None
    if labels is not None:
        check_same_grid([target_volume, labels])
    if brain_extraction == "labels":
        if labels is None:
            raise InputError(f"subject {inputs.subject}: brain_extraction 'labels' needs label files")
        mask = check_mask(labels.data, inputs.labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    corrected, extracted = correct_and_extract({inputs.target: target_volume}, inputs.target,
                                               float(target_volume.voxel_mm.mean()), use_n4=use_n4,
                                               extract=brain_extraction == "template")
    fixed = corrected[inputs.target]
    template = priors = None
    if extracted is not None:
        mask, template = check_mask(extracted.mask, out_dir / "brainmask.nii.gz"), extracted.template
        priors = extracted.tissue_priors
    if priors is not None:
        estimated = tissue_labels(fixed.numpy(), mask, priors)
    elif inputs.target in PROTOCOLS:  # given labels: Atropos only checks them, where it knows the tissue order
        estimated = atropos_labels(fixed, mask, inputs.target)
    else:
        estimated = None
    qc: dict[str, float] = {}
    if labels is None:
        label_data = estimated
    else:
        label_data = labels.data
        # Sanity check of the labels real data would get against the known truth (the key keeps its name:
        # tables.qc_tables reads it into atropos.csv).
        if estimated is not None:
            qc.update({f"atropos_dice_{k}": v for k, v in dice_per_class(estimated, label_data).items()})
    affine = target_volume.affine
    save_volume(out_dir / "brainmask.nii.gz", mask, affine, dtype=np.uint8)
    save_volume(out_dir / "labels.nii.gz", label_data, affine, dtype=np.uint8)
    if template is not None:
        save_volume(out_dir / "template.nii.gz", template, affine)
    _save_with_normalised(out_dir, inputs.target, fixed.numpy(), mask, affine, percentiles)
    write_json(out_dir / "qc.json", {"subject": inputs.subject, **qc})
    return qc


def register_source(
    subject: str,
    contrast: str,
    image: Path,
    out_dir: Path,
    target: str,
    *,
    registration: Registration = "Rigid",
    use_n4: bool = True,
    percentiles: tuple[float, float] = (0.5, 99.5),
    misalignment: Path | None = None,
) -> dict[str, float]:
    """Bring one source contrast of a subject onto its preprocessed target (preprocess_target's out_dir):
    N4, then `registration` to <target>.nii.gz, then normalisation inside brainmask.nii.gz. A job of its
    own in the workflow, so that a source nothing reads (a training subject's) is never registered.

    Writes <contrast>.nii.gz, <contrast>_norm.nii.gz, <contrast>_to_<target>.mat and <contrast>_qc.json;
    returns that QC: the registration error where the true misalignment is known (phantom,
    "<contrast>_error_{before,after}_mm")."""
    moving_volume = load_volume(image)
    fixed_volume = load_volume(out_dir / f"{target}.nii.gz")
    mask = load_volume(out_dir / "brainmask.nii.gz").data > 0
    moving = to_ants(moving_volume.data, moving_volume.affine)
    transform = out_dir / f"{contrast}_to_{target}.mat"
    registered = _register(to_ants(fixed_volume.data, fixed_volume.affine), n4(moving) if use_n4 else moving,
                           registration, transform)
    truth = read_json(misalignment) if misalignment else {}
    qc: dict[str, float] = {}
    if contrast in truth:
        matrix = np.asarray(truth[contrast]["target_to_source"], dtype=float)
        for key, value in registration_error_mm(transform, matrix, mask, fixed_volume.affine).items():
            qc[f"{contrast}_{key}"] = value
    _save_with_normalised(out_dir, contrast, registered.numpy(), mask, fixed_volume.affine, percentiles)
    write_json(out_dir / f"{contrast}_qc.json", {"subject": subject, **qc})
    return qc


def _save_with_normalised(out_dir: Path, contrast: str, data: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                          percentiles: tuple[float, float]) -> None:
    """<contrast>.nii.gz as given and <contrast>_norm.nii.gz, normalised inside the brain mask."""
    save_volume(out_dir / f"{contrast}.nii.gz", data, affine)
    save_volume(out_dir / f"{contrast}_norm.nii.gz", normalise(data, mask, percentiles), affine)


def _register(fixed: ants.ANTsImage, moving: ants.ANTsImage, kind: Registration, transform_path: Path) -> ants.ANTsImage:
    """Register `moving` to `fixed`; save the affine transform; return `moving` resampled on the fixed grid."""
    with tempfile.TemporaryDirectory() as tmp:
        reg = ants.registration(fixed, moving, type_of_transform=kind, outprefix=f"{tmp}/reg_")
        with atomic_path(transform_path) as tmp_path:
            shutil.copyfile(reg["fwdtransforms"][0], tmp_path)
    return reg["warpedmovout"]
