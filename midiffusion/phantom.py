"""The embedded multi-contrast phantom cohort.

Each synthetic subject is the ICBM152 2009a template (nilearn's wheel), or for held-out test subjects
another head's tissue maps (anatomy.py), under a random smooth deformation, rendered as T1w / T2w / PDw (spin echo),
FLAIR (inversion recovery) and DIR (double inversion recovery) images from per-subject tissue parameters (head.py)
with texture, a per-contrast bias field and Rician noise; source contrasts are rigidly misaligned.

nilearn's ICBM152 T1 is skull-stripped, so the head around the brain (skull, diploe, muscle, fat,
skin) is a synthetic layered shell grown outward from the brain surface (head.py), with thickness
varying smoothly per subject; it is label 0 like the background.

Written per subject, BIDS-like (the layout real BIDS data uses):
    sub-<id>/anat/sub-<id>_<contrast>.nii.gz   float32, all contrasts on one grid and affine
    sub-<id>/anat/sub-<id>_dseg.nii.gz         uint8: 0 background, 1 CSF, 2 GM, 3 WM (target space)
    sub-<id>/anat/sub-<id>_misalignment.json   {source: {"target_to_source", "rotation_deg", "translation_mm"}}
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from .head import BRAIN_TISSUES, HEAD_TISSUES, PROTOCOLS, TISSUES, Anatomy, Texture, Tissue, clean_image, head_anatomy
from .config import default
from .io import InputError, atomic_path, save_volume, write_json
from .layout import bids_image
from .template import CSF_RIM_MM, Template, load_template

DEFAULT_SOURCES = tuple(default("data", "sources"))
# Distance from the brain (mm) for points pulled from beyond the template's field of view: air.
_FAR_MM = 1e3


@dataclass(frozen=True)
class PhantomSettings:
    """Amplitudes of the random draws (fractions are relative standard deviations unless stated)."""

    warp_sigma_mm: float = 15.0  # smoothness of the displacement field
    warp_mm: float = 2.0  # displacement standard deviation per axis
    scaling: float = 0.04  # global scaling per axis, uniform +-
    tissue_variation: float = 0.03  # per-subject tissue parameters, clipped at 2 standard deviations
    texture: float = 0.04  # intra-tissue heterogeneity of T1, T2 and PD
    texture_sigma_mm: float = 3.0
    csf_rim_mm: float = CSF_RIM_MM  # extra-axial CSF outside the template's brain mask
    head_thickness: float = 0.15  # log-amplitude of the head shell's smooth thickness variation
    head_thickness_sigma_mm: float = 20.0
    bias: float = 0.1  # log-amplitude of the multiplicative bias field
    bias_sigma_mm: float = 50.0
    noise: float = 0.03  # Rician sigma as a fraction of the brightest brain tissue's signal
    rotation_deg: tuple[float, float] = (1.0, 4.0)  # per-axis magnitude range, random sign
    translation_mm: tuple[float, float] = (1.0, 4.0)
    intensity_scale: float = 1000.0  # scanner-like units


@dataclass(frozen=True)
class Rigid:
    """A rigid RAS-mm transform: `matrix` maps a target-image point to the same anatomy in the source image.

    matrix = [[R, t], [0, 1]], R = Rz @ Ry @ Rx from `rotation_deg` (about x, y, z, through the world
    origin, i.e. the anterior commissure), t = `translation_mm`.
    """

    matrix: np.ndarray
    rotation_deg: np.ndarray
    translation_mm: np.ndarray

    def to_json(self) -> dict[str, list]:
        return {
            "target_to_source": self.matrix.tolist(),
            "rotation_deg": self.rotation_deg.tolist(),
            "translation_mm": self.translation_mm.tolist(),
        }


@dataclass
class SubjectPhantom:
    """One simulated subject in memory: images (X, Y, Z) float32 per contrast, all on `affine`."""

    subject: str
    images: dict[str, np.ndarray]
    anatomy: Anatomy
    tissues: dict[str, Tissue]
    misalignment: dict[str, Rigid]

    @property
    def affine(self) -> np.ndarray:
        return self.anatomy.affine


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-filtered white noise of `shape`, zero mean and unit standard deviation, float32.

    Wide kernels are applied on a coarser grid and interpolated up, which costs far less and looks the same.
    """
    step = max(1, int(sigma_vox // 2))
    coarse = tuple(-(-size // step) + 1 for size in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma_vox / step, mode="wrap")
    if step > 1:
        field = ndimage.zoom(field, [s / c for s, c in zip(shape, coarse)], order=1, grid_mode=True, mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / max(float(field.std()), 1e-12)).astype(np.float32)


def _voxel_coordinates(
    rng: np.random.Generator, template: Template, voxel_mm: float, settings: PhantomSettings
) -> np.ndarray:
    """Template voxel coordinates (3, X, Y, Z) sampled by each subject voxel: a smooth random deformation.

    Subject point y (mm) comes from template point x = c + (y - c) / s + u(y), c the brain centre, s a
    global scaling per axis and u a smooth displacement; u is halved until the Jacobian is clearly positive.
    """
    shape = template.gm.shape
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = template.affine[:3, :3] @ index + template.affine[:3, 3:]
    centre = world[:, template.distance_mm.reshape(-1) < 0].mean(axis=1, keepdims=True)
    inverse_scale = 1.0 / (1.0 + rng.uniform(-settings.scaling, settings.scaling, (3, 1)))
    displacement = np.stack([smooth_noise(rng, shape, settings.warp_sigma_mm / voxel_mm) for _ in range(3)])
    displacement *= settings.warp_mm
    while _min_jacobian(displacement, inverse_scale[:, 0], voxel_mm) < 0.3:
        displacement *= 0.5
    source = centre + (world - centre) * inverse_scale + displacement.reshape(3, -1)
    index = np.linalg.inv(template.affine)[:3, :3] @ source + np.linalg.inv(template.affine)[:3, 3:]
    return index.reshape(3, *shape)


def _min_jacobian(displacement: np.ndarray, inverse_scale: np.ndarray, voxel_mm: float) -> float:
    """Smallest determinant of d(template point) / d(subject point) = diag(1/s) + grad u."""
    j = [list(np.gradient(component, voxel_mm)) for component in displacement]  # j[i][k] = d u_i / d y_k
    for i in range(3):
        j[i][i] = j[i][i] + inverse_scale[i]
    det = (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )
    return float(det.min())


def subject_anatomy(
    rng: np.random.Generator,
    voxel_mm: float,
    *,
    with_head: bool = True,
    settings: PhantomSettings = PhantomSettings(),
    anatomy_maps: Path | None = None,
) -> Anatomy:
    """Deform the template (or a held-out anatomy's maps, anatomy.py) at `voxel_mm` and derive the
    partial volumes (see Anatomy)."""
    template = load_template(voxel_mm, anatomy_maps)
    coordinates = _voxel_coordinates(rng, template, voxel_mm, settings)

    def warp(data: np.ndarray, outside: float) -> np.ndarray:
        return ndimage.map_coordinates(data, coordinates, order=1, mode="constant", cval=outside).astype(np.float32)

    gm, wm = warp(template.gm, 0.0), warp(template.wm, 0.0)
    # Distance beyond the brain, stretched by a smooth per-subject factor so the head shell varies in thickness.
    variation = smooth_noise(rng, gm.shape, settings.head_thickness_sigma_mm / voxel_mm)
    thickness = np.exp(settings.head_thickness * variation)
    outside_mm = (warp(template.distance_mm, _FAR_MM) - settings.csf_rim_mm) / thickness
    return head_anatomy(gm, wm, outside_mm, voxel_mm, template.affine, with_head=with_head)


def draw_tissues(rng: np.random.Generator, variation: float) -> dict[str, Tissue]:
    """Brain tissue parameters with a relative variation (standard deviation, clipped at 2) per parameter."""

    def vary(value: float) -> float:
        return float(value * (1.0 + variation * np.clip(rng.standard_normal(), -2.0, 2.0)))

    brain = {name: Tissue(vary(t.t1_ms), vary(t.t2_ms), vary(t.pd)) for name, t in BRAIN_TISSUES.items()}
    return {**brain, **HEAD_TISSUES}


def draw_texture(
    rng: np.random.Generator, shape: tuple[int, ...], voxel_mm: float, settings: PhantomSettings
) -> Texture:
    """Smooth heterogeneity fields, one per tissue parameter, so tissues are textured, not flat."""
    sigma = settings.texture_sigma_mm / voxel_mm
    fields = [np.exp(settings.texture * smooth_noise(rng, shape, sigma)) for _ in range(3)]
    return Texture(*fields)


def draw_rigid(rng: np.random.Generator, settings: PhantomSettings) -> Rigid:
    """A small random rigid transform: each angle and shift has a magnitude in the settings' range, random sign."""
    angles = rng.uniform(*settings.rotation_deg, 3) * rng.choice([-1.0, 1.0], 3)
    shift = rng.uniform(*settings.translation_mm, 3) * rng.choice([-1.0, 1.0], 3)
    rotation = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(angles)):  # x, then y, then z
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        step = np.eye(3)
        step[[i, i, j, j], [i, j, i, j]] = [c, -s, s, c]
        rotation = step @ rotation
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, shift
    return Rigid(matrix=matrix, rotation_deg=angles, translation_mm=shift)


def move_content(image: np.ndarray, affine: np.ndarray, target_to_source: np.ndarray) -> np.ndarray:
    """Resample on the same grid so that out(y) = image(A^-1 y) (world mm): content moved by A. (X, Y, Z) float32."""
    voxel_map = np.linalg.inv(affine) @ np.linalg.inv(target_to_source) @ affine
    moved = ndimage.affine_transform(image, voxel_map[:3, :3], voxel_map[:3, 3], order=3, mode="constant", cval=0.0)
    return np.clip(moved, 0.0, None).astype(np.float32)  # cubic splines overshoot slightly at edges


def _bias_field(
    rng: np.random.Generator, shape: tuple[int, ...], voxel_mm: float, settings: PhantomSettings
) -> np.ndarray:
    return np.exp(settings.bias * smooth_noise(rng, shape, settings.bias_sigma_mm / voxel_mm))


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation sigma per channel."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def _rng(seed: int, subject: str, purpose: str) -> np.random.Generator:
    """An independent stream per (seed, subject, purpose): a subject rebuilt alone, or with other
    contrasts, gets the same anatomy and the same noise for each contrast."""
    return np.random.default_rng([seed, zlib.crc32(f"{subject}/{purpose}".encode())])


def _check_arguments(subject: str, voxel_mm: float, target: str, sources: list[str]) -> None:
    if not re.fullmatch(r"[A-Za-z0-9]+", subject):
        raise InputError(f"subject {subject!r}: a BIDS subject label must be letters and digits only")
    if voxel_mm < 1 or abs(voxel_mm - round(voxel_mm)) > 1e-6:
        raise InputError(f"voxel_mm {voxel_mm}: the phantom needs a whole number of millimetres >= 1")
    for contrast in [target, *sources]:
        if contrast not in PROTOCOLS:
            raise InputError(f"contrast {contrast!r}: the phantom renders only {sorted(PROTOCOLS)}")
    if target in sources or len(set(sources)) != len(sources):
        raise InputError(f"sources {sources}: must be distinct and must not include the target {target}")


def simulate_subject(
    subject: str,
    *,
    voxel_mm: float = 2.0,
    target: str = "T1w",
    sources: Sequence[str] = DEFAULT_SOURCES,
    seed: int = 0,
    with_head: bool = True,
    noise: bool = True,
    bias: bool = True,
    misalign: bool = True,
    settings: PhantomSettings = PhantomSettings(),
    anatomy_maps: Path | None = None,
) -> SubjectPhantom:
    """Simulate one subject in memory; `noise`, `bias`, `misalign` switch those stages off (for checks);
    `anatomy_maps`: a held-out anatomy's tissue maps (anatomy.write_tissue_maps) instead of the template."""
    sources = list(sources)
    _check_arguments(subject, voxel_mm, target, sources)
    voxel_mm = float(round(voxel_mm))
    anatomy = subject_anatomy(
        _rng(seed, subject, "anatomy"), voxel_mm, with_head=with_head, settings=settings, anatomy_maps=anatomy_maps
    )
    tissues = draw_tissues(_rng(seed, subject, "tissues"), settings.tissue_variation)
    texture = draw_texture(_rng(seed, subject, "texture"), anatomy.brain.shape, voxel_mm, settings)
    images, misalignment = {}, {}
    for contrast in [target, *sources]:
        rng = _rng(seed, subject, contrast)
        protocol = PROTOCOLS[contrast]
        image = clean_image(anatomy, tissues, texture, protocol)
        if contrast != target:
            misalignment[contrast] = draw_rigid(rng, settings)
            if misalign:
                image = move_content(image, anatomy.affine, misalignment[contrast].matrix)
        if bias:
            image = image * _bias_field(rng, image.shape, voxel_mm, settings)
        if noise:
            brightest = max(tissues[name].signal(protocol) for name in TISSUES)
            image = _rician(rng, image, settings.noise * brightest)
        images[contrast] = (settings.intensity_scale * image).astype(np.float32)
    return SubjectPhantom(subject, images, anatomy, tissues, misalignment)


def qc_figure(phantom: SubjectPhantom, path: Path) -> Path:
    """PNG of the mid axial and coronal slices of every contrast and the labels (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # imported here: only QC needs matplotlib

    panels = {**phantom.images, "dseg": phantom.anatomy.labels}
    centre = np.array(phantom.anatomy.brain.shape) // 2
    figure, axes = plt.subplots(2, len(panels), figsize=(2.6 * len(panels), 5.4), squeeze=False)
    for column, (name, volume) in enumerate(panels.items()):
        views = (volume[:, :, centre[2]], volume[:, centre[1], :])  # axial, coronal
        for row, view in enumerate(views):
            axes[row, column].imshow(view.T, origin="lower", cmap="viridis" if name == "dseg" else "gray")
            axes[row, column].axis("off")
        axes[0, column].set_title(name)
    figure.suptitle(f"sub-{phantom.subject}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=80)
    plt.close(figure)
    return Path(path)


def subject_paths(out_dir: Path, subject: str, contrasts: list[str]) -> dict[str, Path]:
    """Output paths of one subject keyed by contrast, "dseg" and "misalignment" (layout.bids_image)."""
    paths = {key: bids_image(out_dir, subject, key) for key in (*contrasts, "dseg")}
    return paths | {"misalignment": bids_image(out_dir, subject, "misalignment", ".json")}


def build_subject(
    out_dir: Path,
    subject: str,
    *,
    voxel_mm: float = 2.0,
    target: str = "T1w",
    sources: Sequence[str] = DEFAULT_SOURCES,
    seed: int = 0,
    with_head: bool = True,
    qc_dir: Path | None = None,
    anatomy_maps: Path | None = None,
) -> list[Path]:
    """Simulate subject `subject` (e.g. "01") and write its files (module docstring); returns the paths written.

    The result depends only on (seed, subject), the settings and the anatomy, not on which other subjects
    are built.
    """
    phantom = simulate_subject(
        subject, voxel_mm=voxel_mm, target=target, sources=sources, seed=seed, with_head=with_head,
        anatomy_maps=anatomy_maps,
    )
    paths = subject_paths(out_dir, subject, [target, *sources])
    for contrast, image in phantom.images.items():
        save_volume(paths[contrast], image, phantom.affine)
    save_volume(paths["dseg"], phantom.anatomy.labels, phantom.affine, dtype=np.uint8)
    write_json(paths["misalignment"], {c: rigid.to_json() for c, rigid in phantom.misalignment.items()})
    written = list(paths.values())
    if qc_dir is not None:
        written.append(qc_figure(phantom, Path(qc_dir) / f"sub-{subject}.png"))
    return written


def build_cohort(
    out_dir: Path,
    subjects: list[str],
    *,
    voxel_mm: float = 2.0,
    target: str = "T1w",
    sources: Sequence[str] = DEFAULT_SOURCES,
    seed: int = 0,
    with_head: bool = True,
    qc_dir: Path | None = None,
) -> list[Path]:
    """build_subject for each subject id; returns every path written."""
    if len(set(subjects)) != len(subjects):
        raise InputError(f"subjects {subjects}: duplicate subject ids")
    options = dict(voxel_mm=voxel_mm, target=target, sources=sources, seed=seed, with_head=with_head, qc_dir=qc_dir)
    return [path for subject in subjects for path in build_subject(out_dir, subject, **options)]
