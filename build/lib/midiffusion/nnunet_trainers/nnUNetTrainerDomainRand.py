"""nnU-Net trained on images synthesised from its labels: SynthSeg-style domain randomisation.

Billot et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and resolution without
retraining", Medical Image Analysis 86 (2023) 102789. Every training sample's image is replaced by one
drawn from its label map alone (background is a class too): a Gaussian per class with random mean and
spread (uniform means, so tissues come in any order of brightness), a smooth multiplicative bias
field, min-max scaling and a random gamma, partial-volume blur and a random loss of resolution (blur,
downsample, noise on the coarse grid, upsample), and last the z-scoring that nnU-Net's
ZScoreNormalization gives the MR images the model will segment. The model never sees a real contrast.
"""

from math import ceil
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

# SynthSeg's training defaults are followed where they exist (names are its arguments).
MEAN_RANGE = (25.0, 225.0)  # prior_means: per-class mean ~ U(25, 225) on its 0-255 scale
STD_RANGE = (5.0, 25.0)  # prior_stds: per-class sd ~ U(5, 25)
BIAS_STD_MAX = 0.7  # bias_field_std: log-field ~ N(0, s), s ~ U(0, 0.7) ...
BIAS_SHAPE_FACTOR = 0.025  # bias_scale: ... on a grid 0.025 x the image's size, linearly upsampled
BIAS_PROB = 0.95  # BiasFieldCorruption's prob
CLIP_MAX = 300.0  # IntensityAugmentation(clip=300): clip to [0, 300], then min-max to [0, 1] ...
LOG_GAMMA_STD = 0.5  # ... and raise to exp(N(0, 0.5)) (gamma_std)
MAX_RES_ISO_MM = 4.0  # max_res_iso: each axis's resolution ~ U(spacing, 4 mm) with probability PROB_ISO,
MAX_RES_ANISO_MM = 8.0  # max_res_aniso: else one random axis's ~ U(spacing, 8 mm)
PROB_ISO = 0.1  # SampleResolution's prob_iso
PROB_NATIVE = 0.05  # and prob_min: keep the native resolution
# blur before downsampling: sd 0.75 x (slice thickness ~ U(spacing, resolution)) / spacing voxels,
# 0.5 voxel at the native resolution (partial volume), x U(1/1.03, 1.03) (blurring_sigma_for_downsampling)
BLUR_RANGE = 1.03
# Not SynthSeg's (its noise is the per-class spread alone): white noise on the coarse grid, sd up to
# 5% of the [0, 1] range, as an acquired low-resolution image has before it is upsampled.
NOISE_STD_MAX = 0.05


def synthesise(labels: torch.Tensor, spacing: Sequence[float], generator: torch.Generator) -> torch.Tensor:
    """One image (1, *S) drawn from `labels` (*S): class indices 0..K, or -1 outside the image.

    `spacing` (mm per axis; the last len(S) are used) sets the resolution loss in millimetres. Voxels
    labelled -1 (nnU-Net's padding, or outside the nonzero mask) are drawn as background, then set
    to 0, the value nnU-Net pads real images with; the others are z-scored.
    """
    shape = labels.shape
    classes = labels.long().clamp(min=0)
    n_classes = int(classes.max()) + 1
    means = _uniform(generator, *MEAN_RANGE, (n_classes,))
    stds = _uniform(generator, *STD_RANGE, (n_classes,))
    image = (means[classes] + stds[classes] * torch.randn(shape, generator=generator))[None]

    if _uniform(generator, 0, 1) < BIAS_PROB:
        grid = [max(2, ceil(BIAS_SHAPE_FACTOR * n)) for n in shape]
        log_field = torch.randn((1, 1, *grid), generator=generator) * _uniform(generator, 0, BIAS_STD_MAX)
        image = image * _resize(log_field, shape)[0].exp()

    image = image.clamp(0, CLIP_MAX)
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-6)
    image = image ** torch.exp(LOG_GAMMA_STD * torch.randn((), generator=generator))

    spacing_mm = torch.tensor(spacing[-len(shape) :], dtype=torch.float32)
    resolution = _sample_resolution(spacing_mm, generator)
    thickness = _uniform(generator, spacing_mm, resolution)
    sigma = torch.where(resolution > spacing_mm, 0.75 * thickness / spacing_mm, 0.5)
    image = _blur(image, sigma * _uniform(generator, 1 / BLUR_RANGE, BLUR_RANGE))
    coarse = [max(1, round(n * float(s / r))) for n, s, r in zip(shape, spacing_mm, resolution)]
    image = _resize(image[None], coarse)
    image = image + _uniform(generator, 0, NOISE_STD_MAX) * torch.randn(image.shape, generator=generator)
    image = _resize(image, shape)[0]

    valid = labels >= 0
    values = image[0][valid] if valid.any() else image.flatten()
    return ((image - values.mean()) / values.std().clamp(min=1e-6)).where(valid, 0.0)


def _uniform(generator: torch.Generator, low, high, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """U(low, high) of `shape`; low and high may be tensors of that shape."""
    return low + (high - low) * torch.rand(shape, generator=generator)


def _sample_resolution(spacing: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SynthSeg's SampleResolution: the acquired resolution (mm) per axis."""
    if _uniform(generator, 0, 1) < PROB_NATIVE:
        return spacing
    if _uniform(generator, 0, 1) < PROB_ISO:
        return _uniform(generator, spacing, spacing.clamp(min=MAX_RES_ISO_MM), spacing.shape)
    resolution = spacing.clone()
    axis = int(torch.randint(len(spacing), (), generator=generator))
    resolution[axis] = _uniform(generator, spacing[axis], spacing[axis].clamp(min=MAX_RES_ANISO_MM))
    return resolution


def _resize(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear resampling of (N, C, *S) to (N, C, *size), corners aligned."""
    mode = ("linear", "bilinear", "trilinear")[len(size) - 1]
    return F.interpolate(image, size=list(size), mode=mode, align_corners=True)


def _blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (1, *S), sd `sigma` voxels per axis, edges replicated."""
    for axis, sd in enumerate(sigma.tolist()):
        radius = max(1, ceil(3 * sd))
        kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / sd) ** 2)
        lines = image.movedim(axis + 1, -1)
        flat = F.pad(lines.reshape(-1, 1, lines.shape[-1]), (radius, radius), mode="replicate")
        blurred = F.conv1d(flat, (kernel / kernel.sum()).view(1, 1, -1))
        image = blurred.reshape(lines.shape).movedim(-1, axis + 1)
    return image


class LabelsToImageTransform(BasicTransform):
    """Replaces each image channel by one synthesised from the segmentation, which is left as it is."""

    def __init__(self, spacing: Sequence[float]):
        super().__init__()
        self.spacing = tuple(float(s) for s in spacing)

    def get_parameters(self, **data_dict) -> dict:
        # a seed from numpy's RNG, which nnU-Net's augmentation workers each reseed; they inherit
        # torch's from the fork unseeded, so torch's own draws would repeat across workers
        return {"seed": int(np.random.randint(2**31))}

    def apply(self, data_dict: dict, **params) -> dict:
        labels = data_dict["segmentation"][0]
        generator = torch.Generator().manual_seed(params["seed"])
        data_dict["image"] = torch.cat([synthesise(labels, self.spacing, generator) for _ in data_dict["image"]])
        return data_dict


class nnUNetTrainerDomainRand(nnUNetTrainer):
    """nnUNetTrainer whose training images are synthesised from the labels before its own augmentation.

    The synthesis comes first, before the spatial transform: the image then takes the path of a real
    one (rotation, scaling and every intensity augmentation apply to it), and it sees the labels as
    stored, where the spatial transform would first have interpolated them. Validation batches stay
    real images: they measure the model on real data, not on the draws it trains on.
    """

    # An instance method here (a static one in nnUNetTrainer): the synthesis needs the plan's spacing.
    def get_training_transforms(self, *args, **kwargs) -> ComposeTransforms:
        transforms = super().get_training_transforms(*args, **kwargs)
        transforms.transforms.insert(0, LabelsToImageTransform(self.configuration_manager.spacing))
        return transforms
