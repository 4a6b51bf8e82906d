"""The sampling loop: joins the UNet and the schedule, with the LMI condition recomputed every step.

At translation time the LMI anchor is the source image (another contrast); the condition at step t
is [LMI(source, x_t), LMI(source, source)] (docs/method.md, "Sampling"). Settings come as one
SamplingConfig; the LMI settings are the model's own (LoadedModel.config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from tqdm import tqdm

from midiffusion.config import SamplingConfig
from midiffusion.io import InputError
from midiffusion.lmi import lmi_condition, local_mutual_information, to_unit
from midiffusion.schedule import DDPMSchedule


@dataclass
class SampleOutput:
    """images: (N, 1, H, W) in [-1, 1]. network_calls: UNet evaluations per image (a classifier-free
    guidance step counts two, run as one double batch); lmi_calls: LMI maps per image."""

    images: torch.Tensor
    network_calls: int
    lmi_calls: int


def _randn(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, I) noise drawn on the generator's device (a CPU generator gives the same noise on any device)."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _timesteps(schedule: DDPMSchedule, sampler: str, steps: int) -> tuple[list[int], list[int]]:
    """(t, t_prev) pairs of the reverse chain, t_prev = -1 for the last step."""
    if sampler == "ddpm":
        current = torch.arange(schedule.timesteps - 1, -1, -1)
    elif sampler == "ddim":
        current = schedule.ddim_timesteps(steps)
    else:
        raise InputError(f"sampler: expected 'ddpm' or 'ddim', got {sampler!r}")
    previous = torch.cat([current[1:], torch.tensor([-1])])
    return current.tolist(), previous.tolist()


class _Denoiser:
    """eps for x_t: conditioned on the LMI map, unconditioned, or classifier-free guided."""

    def __init__(self, model: nn.Module, source: torch.Tensor, guided: bool, scale: float, lmi_kwargs: Mapping):
        self.model, self.guided, self.scale, self.lmi_kwargs = model, guided, scale, dict(lmi_kwargs)
        self.anchor = to_unit(source)
        # LMI(source, source) does not change during sampling: once per call.
        self.self_lmi = local_mutual_information(self.anchor, self.anchor, **self.lmi_kwargs) if guided else None

    @property
    def evaluations(self) -> int:
        return 2 if self.guided and self.scale != 1 else 1

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x: (N, 1, H, W) sample x_t -> eps (N, 1, H, W), float32."""
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        if not self.guided:
            return self.model(x, t_batch, None).float()
        cond = lmi_condition(self.anchor, to_unit(x), self_lmi=self.self_lmi, **self.lmi_kwargs)
        if self.scale == 1:
            return self.model(x, t_batch, cond).float()
        # Conditional and unconditional (zeroed condition, as in training dropout) in one batch.
        pair = torch.cat([cond, torch.zeros_like(cond)])
        eps_c, eps_u = self.model(torch.cat([x, x]), torch.cat([t_batch, t_batch]), pair).float().chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)


@torch.inference_mode()
def sample(
    model: nn.Module,
    schedule: DDPMSchedule,
    source: torch.Tensor,
    config: SamplingConfig = SamplingConfig(),
    *,
    guided: bool = True,
    lmi_kwargs: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> SampleOutput:
    """Translate `source` (N, 1, H, W) in [-1, 1] into the model's contrast, starting from pure noise.

    config.sampler "ddpm": all T ancestral steps (the paper; `steps` and `eta` unused); "ddim":
    `steps` DDIM steps with `eta` (0 = deterministic given the initial noise). guided=False drops
    the condition (zeros: the unguided ablation; guidance_scale unused). guidance_scale s != 1 uses
    classifier-free guidance eps_u + s (eps_c - eps_u). lmi_kwargs must be the training ones
    (DiffusionConfig.lmi_kwargs()). The model and source must be on the same device; a CPU generator
    gives the same samples on every device. The whole batch goes through at once (n_samples and
    batch_size are the caller's: see translate.sample_slices).
    """
    if source.ndim != 4 or source.shape[1] != 1:
        raise InputError(f"source: expected shape (N, 1, H, W), got {tuple(source.shape)}")
    sampler = config.sampler
    current, previous = _timesteps(schedule, sampler, config.steps)
    denoiser = _Denoiser(model, source.float(), guided, config.guidance_scale, lmi_kwargs or {})
    was_training = model.training
    model.eval()
    try:
        x = _randn(source.shape, generator, source.device)  # x_T
        for t, t_prev in tqdm(list(zip(current, previous)), desc=sampler, unit="step", disable=not progress):
            eps = denoiser(x, t)
            if sampler == "ddpm":
                noise = _randn(x.shape, generator, x.device) if t > 0 else None
                x = schedule.ddpm_step(eps, t, x, noise, config.ddpm_variance, config.clip_x0).prev_sample
            else:
                noise = _randn(x.shape, generator, x.device) if config.eta > 0 else None
                x = schedule.ddim_step(eps, t, t_prev, x, config.eta, noise, config.clip_x0).prev_sample
    finally:
        model.train(was_training)
    return SampleOutput(
        images=x.clamp(-1, 1),
        network_calls=len(current) * denoiser.evaluations,
        lmi_calls=len(current) + 1 if guided else 0,
    )
