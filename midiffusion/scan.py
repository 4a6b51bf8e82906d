"""One scan, no workflow: translate a single source-contrast image with a trained diffusion model, and
segment one image with a trained nnU-Net, each written back on its input's own grid (docs/scan.md).

Translation chains the workflow's own pieces: the input is resampled onto an RAS-aligned isotropic
grid at the voxel size the model was trained on (the workflow's target images are RAS, so that axis 2
is axial), then N4 and brain extraction and normalisation as preprocess.preprocess_subject does them
(brain extraction registers a reference head of the source's own contrast: a single scan has no
target image), then translate.translate_volume, and the result is resampled back onto the input grid.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import ants
import numpy as np
from nibabel.processing import vox2out_vox

from .baselines import BASELINES, RANK_MAPS, BaselineInputs
from .config import NEEDS_TEMPLATE, SamplingConfig, default
from .diffusion.model import LoadedModel, load_model
from .diffusion.translate import translate_volume
from .head import PROTOCOLS
from .io import InputError, Volume, check_mask, load_volume, save_volume
from .layout import BACKGROUND
from .intensity import normalise
from .preprocess import correct_and_extract, to_ants
from .segment import Device, NnunetDirs, model_folder, segment_volumes

log = logging.getLogger(__name__)


def scan_contrast(path: Path, contrast: str | None = None) -> str:
    """The given contrast, else the BIDS suffix of the file name (my_FLAIR.nii.gz -> FLAIR)."""
    if contrast is None:
        found = re.search(r"_([A-Za-z0-9]+)\.nii(\.gz)?$", Path(path).name)
        if found is None:
            raise InputError(f"{path}: name the source contrast with --contrast (T2w, PDw, FLAIR, ...); "
                             "the file name does not end in _<contrast>.nii.gz")
        contrast = found.group(1)
    if not re.fullmatch(r"[A-Za-z0-9]+", contrast):
        raise InputError(f"contrast: a BIDS suffix of letters and digits, got {contrast!r}")
    return contrast


def working_grid(volume: Volume, voxel_mm: float) -> Volume:
    """An empty RAS-aligned grid of isotropic `voxel_mm` voxels that holds the whole input volume."""
    shape, affine = vox2out_vox((volume.data.shape, volume.affine), (voxel_mm,) * 3)
    return Volume(np.zeros(shape, np.float32), affine)


def resample(volume: Volume, grid: Volume) -> np.ndarray:
    """`volume` resampled (linear) onto the grid of `grid`; 0 where it does not reach."""
    moving, target = to_ants(volume.data, volume.affine), to_ants(grid.data, grid.affine)
    return ants.resample_image_to_target(moving, target, interp_type="linear").numpy()


def translate_scan(
    model_path: Path,
    source_path: Path,
    out_path: Path,
    *,
    std_path: Path | None = None,
    contrast: str | None = None,
    target_contrast: str = default("data", "target"),
    config: SamplingConfig = SamplingConfig(),
    voxel_mm: float = default("phantom", "voxel_mm"),
    use_n4: bool = default("preprocess", "n4"),
    percentiles: tuple[float, float] = default("preprocess", "percentiles"),
    device: str = "auto",
) -> Path:
    """Translate one raw source-contrast scan into the model's target contrast; return out_path.

    out_path: the mean over config.n_samples samples on the input's grid (its shape and affine), on
    the workflow's normalised scale [-1, 1], BACKGROUND (-1) outside the brain. std_path (needs
    n_samples > 1): the voxelwise standard deviation over the samples, 0 outside the brain.
    Every input is checked before any compute: the image (io.load_volume), the contrast, the model file.
    `voxel_mm`: the voxel size of the volumes the model was trained on (the default run's phantoms);
    `target_contrast`: the model's (the atlas starts' template contrast).
    """
    source = load_volume(source_path)
    contrast = scan_contrast(source_path, contrast)
    if std_path is not None and config.n_samples < 2:
        raise InputError(f"--std: a standard deviation needs n_samples > 1, got {config.n_samples}")
    loaded = load_model(model_path, device)
    check_scan_start(config.start, loaded, model_path, target_contrast)  # before preprocessing
    grid = working_grid(source, voxel_mm)
    log.info("%s: %sbrain extraction (registering the %s reference head)", source_path,
             "N4 bias field correction, " if use_n4 else "", contrast)
    images, extracted = correct_and_extract({contrast: Volume(resample(source, grid), grid.affine)}, contrast,
                                            voxel_mm, use_n4=use_n4, template_contrast=target_contrast)
    image = images[contrast]
    mask = check_mask(extracted.mask, source_path)
    with tempfile.TemporaryDirectory(prefix="midiffusion-scan-") as tmp:
        # the source keeps its file name, which the progress bar shows, in a folder of its own
        normalised = Volume(normalise(image.numpy(), mask, percentiles), grid.affine)
        work_source = save_volume(Path(tmp) / "source" / Path(source_path).name, normalised.data, grid.affine)
        start = scan_start(config.start, normalised, mask, loaded, extracted.template, percentiles)
        work_start = None if start is None else save_volume(Path(tmp) / "start.nii.gz", start, grid.affine)
        work_mask = save_volume(Path(tmp) / "brainmask.nii.gz", mask, grid.affine, dtype=np.uint8)
        work_std = Path(tmp) / "std.nii.gz" if std_path is not None else None
        work_mean = translate_volume(model_path, work_mask, Path(tmp) / "mean.nii.gz", source_path=work_source,
                                     start_path=work_start, config=config, std_path=work_std, device=device)
        inside = resample(Volume(mask.astype(np.float32), grid.affine), source) > 0.5
        if work_std is not None:
            save_volume(std_path, _on_input(work_std, source, inside, 0.0), source.affine)
        return save_volume(out_path, _on_input(work_mean, source, inside, BACKGROUND), source.affine)


def check_scan_start(start: str, loaded: LoadedModel, model_path: Path, target_contrast: str) -> None:
    """One scan makes its start as the workflow does (baselines.BASELINES on one case): the rank maps need
    the training targets' brain quantiles that model.pt keeps, the atlas maps the head model's image of
    the target contrast, registered to the scan with its brain extraction."""
    if start in RANK_MAPS and loaded.target_quantiles is None:
        raise InputError(f"{model_path}: this model file predates the stored target intensities that the {start} "
                         "start needs; retrain it, or translate with --start noise")
    if start in NEEDS_TEMPLATE and target_contrast not in PROTOCOLS:
        raise InputError(f"--start {start}: the head model has no {target_contrast} template (known: "
                         f"{sorted(PROTOCOLS)}); translate with --start invert or --start noise")


def scan_start(start: str, normalised: Volume, mask: np.ndarray, loaded: LoadedModel, template: np.ndarray,
               percentiles: tuple[float, float]) -> np.ndarray | None:
    """The start image of one scan's translation (None for noise): BASELINES[start] on the normalised
    scan, with model.pt's target quantiles and the registered target-contrast template."""
    if start == "noise":
        return None
    inputs = BaselineInputs(normalised, normalised, mask, [], template=Volume(template, normalised.affine),
                            percentiles=percentiles, quantiles=loaded.target_quantiles)
    return BASELINES[start](inputs)


def _on_input(path: Path, source: Volume, inside: np.ndarray, outside: float) -> np.ndarray:
    """The working-grid volume at `path` on the source's grid, `outside` outside the brain."""
    return np.where(inside, resample(load_volume(path), source), outside)


def segment_scan(
    image_path: Path,
    out_path: Path,
    dirs: NnunetDirs,
    dataset_id: int = default("nnunet", "dataset_id"),
    *,
    configuration: str = default("nnunet", "configuration"),
    trainer: str = default("nnunet", "trainer"),
    device: Device = "auto",
    num_processes: int = default("nnunet", "num_processes"),
    mirroring: bool = default("nnunet", "mirroring"),
) -> Path:
    """Segment one image (e.g. translate_scan's output) with a trained nnU-Net; labels 0..3 on its grid."""
    folder = model_folder(dirs, dataset_id, configuration, trainer)  # InputError when the dataset is missing
    if not folder.is_dir():
        trained = sorted(p.name for p in folder.parent.glob("*__*"))
        raise InputError(f"{folder}: no trained nnU-Net model for trainer {trainer} ({configuration}); "
                         f"{folder.parent} holds {trained}")
    return segment_volumes(dirs, dataset_id, [(Path(image_path), Path(out_path))], configuration=configuration,
                           trainer=trainer, device=device, num_processes=num_processes, mirroring=mirroring)[0]
