"""The diffusion model as training and inference share it: building the UNet and its schedule from
a DiffusionConfig, choosing the device, and saving / loading model.pt (EMA weights + config).
Inference imports this module, never the training loop."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DiffusionConfig
from ..io import InputError, atomic_path
from .schedule import DDPMSchedule
from .unet import UNet

MODEL_FILE = "model.pt"
# Training settings measured, dropped and removed (docs/history.md) that older model files still carry.
RETIRED_KEYS = ("deform_copies", "deform_pixels")


@dataclass
class LoadedModel:
    """A trained model ready to sample: the EMA UNet (eval mode), its schedule and its config, whose
    LMI settings every sampler must use."""

    model: UNet
    schedule: DDPMSchedule
    config: DiffusionConfig
    # the training targets' brain quantiles (intensity.reference_quantiles), the rank maps' intensity
    # reference when one scan is translated without the training images; None in older model files
    target_quantiles: np.ndarray | None = None

    @property
    def device(self) -> torch.device:
        return self.schedule.betas.device


def build_model(config: DiffusionConfig) -> UNet:
    """The UNet: x_t plus the two LMI condition channels in, eps out."""
    return UNet(
        in_channels=3,
        out_channels=1,
        base_channels=config.base_channels,
        channel_mults=config.channel_mults,
        attention_resolutions=config.attention_resolutions,
        num_res_blocks=config.num_res_blocks,
        dropout=config.dropout,
        image_size=config.image_size,
        mixed_precision=config.mixed_precision,
        cpu_bfloat16=native_cpu_bfloat16() if config.cpu_bfloat16 == "auto" else config.cpu_bfloat16,
    )


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16): only there does bfloat16
    autocast pay (docs/hardware.md)."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def build_schedule(config: DiffusionConfig) -> DDPMSchedule:
    return DDPMSchedule(config.timesteps, config.beta_start, config.beta_end)


def select_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when present, else Apple MPS, else CPU; otherwise the named device, which must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device: {name!r} is not a torch device name") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise InputError(f"device: {name!r} is not available on this machine")
    return device


def save_model(model: UNet, config: DiffusionConfig, path: Path, target_quantiles: np.ndarray | None = None) -> None:
    """model.pt: the (EMA) weights, the config that built them and the training targets' brain quantiles."""
    state = {"model": model.state_dict(), "config": config.to_dict()}
    if target_quantiles is not None:
        state["target_quantiles"] = torch.as_tensor(target_quantiles)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: Path, device: str | torch.device = "auto") -> LoadedModel:
    """Load model.pt (EMA weights + config) onto `device` ("auto" picks one), in eval mode."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    device = select_device(device) if isinstance(device, str) else device
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        # Keys added since the file was written take their defaults, which keep the old behaviour; the
        # retired keys only shaped the training data, so they are dropped.
        config = DiffusionConfig.from_dict({k: v for k, v in state["config"].items() if k not in RETIRED_KEYS})
    except (RuntimeError, KeyError, TypeError, pickle.UnpicklingError) as error:
        raise InputError(f"{path}: not a midiffusion model file ({error})") from None
    model = build_model(config).to(device)
    model.load_state_dict(state["model"])
    quantiles = state.get("target_quantiles")
    return LoadedModel(model=model.eval(), schedule=build_schedule(config).to(device), config=config,
                       target_quantiles=None if quantiles is None else quantiles.cpu().numpy())
