"""The sampling loop: joins the UNet and the schedule, with the LMI condition recomputed every step.

At translation time the LMI anchor is the source image (another contrast); the condition at step t
is [LMI(source, x_t), LMI(source, source)] (docs/method.md, "Sampling"). Two levers, off by default:
an SDEdit start (a given image noised to step t0 instead of pure noise at T) and LMI gradient
guidance (each step's predicted x0 moved up the gradient of LMI(source, x0)). Settings come as one
SamplingConfig; the LMI settings are the model's own (LoadedModel.config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from tqdm import tqdm

from ..config import SamplingConfig
from ..io import InputError
from .lmi import lmi_condition, local_mutual_information, to_unit
from .schedule import DDPMSchedule


@dataclass
class SampleOutput:
    """images: (N, 1, H, W) in [-1, 1]. network_calls: UNet evaluations per image (a classifier-free
    guidance step counts two, run as one double batch); lmi_calls: LMI maps per image (a step of LMI
    gradient guidance adds one, with its backward)."""

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


def _start_step(schedule: DDPMSchedule, t0: float) -> int:
    """The SDEdit start t0 (a fraction of T) as a timestep: round(t0 T) - 1, so 1 is T - 1 (the
    chain's first step) and 0 is -1 (the clean image: no step runs)."""
    return round(t0 * schedule.timesteps) - 1


def _initial(
    schedule: DDPMSchedule, source: torch.Tensor, start: torch.Tensor | None, first_t: int | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The chain's first sample: pure noise x_T, or (SDEdit) `start` noised by q(x_t | start) to the
    first step `first_t` (None: no step runs, so the start itself)."""
    if start is None:
        return _randn(source.shape, generator, source.device)
    if first_t is None:
        return start.float()
    t = torch.full((len(start),), first_t, dtype=torch.long, device=start.device)
    return schedule.add_noise(start.float(), _randn(start.shape, generator, start.device), t)


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


class _LmiAscent:
    """LMI gradient guidance: eps re-derived from the predicted x0 moved up d mean LMI(source, x0) / d x0.

    The gradient is taken with respect to x0 alone (no backward through the UNet). Its raw size
    depends on the image size, the LMI settings and the image (near 0 in flat regions), so it is
    divided by its per-image RMS: `scale` is then the RMS change of x0 per step in [-1, 1] units,
    comparable across models, slice sizes and steps.
    """

    def __init__(self, schedule: DDPMSchedule, anchor_unit: torch.Tensor, scale: float, clip: bool,
                 lmi_kwargs: Mapping):
        self.schedule, self.scale, self.clip, self.lmi_kwargs = schedule, scale, clip, dict(lmi_kwargs)
        # The sampler's inference-mode tensors cannot be saved for a backward; a clone made outside it can.
        with torch.inference_mode(False):
            self.anchor = anchor_unit.clone()

    def gradient(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (N, 1, H, W) -> d mean LMI(source, x0) / d x0 of each image, (N, 1, H, W)."""
        with torch.inference_mode(False), torch.enable_grad():
            x0 = x0.clone().requires_grad_()
            lmi = local_mutual_information(self.anchor, to_unit(x0), **self.lmi_kwargs)
            (grad,) = torch.autograd.grad(lmi.mean(dim=(1, 2, 3)).sum(), x0)
        return grad

    def __call__(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """eps at x_t -> the eps of the adjusted x0 (clipped as the step clips x0)."""
        x0 = self.schedule.predict_x0(eps, t, x, self.clip)
        grad = self.gradient(x0)
        rms = grad.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
        x0 = x0 + self.scale * grad / rms.clamp_min(torch.finfo(grad.dtype).tiny)
        return self.schedule.predict_eps(x0.clamp(-1, 1) if self.clip else x0, t, x)


@torch.inference_mode()
def sample(
    model: nn.Module,
    schedule: DDPMSchedule,
    source: torch.Tensor,
    config: SamplingConfig = SamplingConfig(),
    *,
    start: torch.Tensor | None = None,
    guided: bool = True,
    lmi_kwargs: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> SampleOutput:
    """Translate `source` (N, 1, H, W) in [-1, 1] into the model's contrast.

    config.sampler "ddpm": all T ancestral steps (the paper; `steps` and `eta` unused); "ddim":
    `steps` DDIM steps with `eta` (0 = deterministic given the initial noise). guided=False drops
    the condition (zeros: the unguided ablation; guidance_scale and lmi_gradient_scale unused: it
    reads no source). guidance_scale s != 1 uses classifier-free guidance eps_u + s (eps_c - eps_u).
    `start` None: from pure noise at T; else (SDEdit) from `start` (N, 1, H, W) in [-1, 1] noised by
    q(x_t | start) to the first of the chain's timesteps t <= round(config.start_t0 T) - 1, which
    alone run (start_t0 = 0 returns `start`; config.start names the image for the workflow and is
    not read here). lmi_gradient_scale > 0 adds LMI gradient guidance (_LmiAscent).
    lmi_kwargs must be the training ones (DiffusionConfig.lmi_kwargs()). The model and source must be
    on the same device; a CPU generator gives the same samples on every device. The whole batch goes
    through at once (n_samples and batch_size are the caller's: see translate.sample_slices).
    """
    if source.ndim != 4 or source.shape[1] != 1:
        raise InputError(f"source: expected shape (N, 1, H, W), got {tuple(source.shape)}")
    if start is not None and start.shape != source.shape:
        raise InputError(f"start: shape {tuple(start.shape)} differs from the source's {tuple(source.shape)}")
    sampler = config.sampler
    steps = list(zip(*_timesteps(schedule, sampler, config.steps)))
    if start is not None:
        steps = [(t, t_prev) for t, t_prev in steps if t <= _start_step(schedule, config.start_t0)]
    denoiser = _Denoiser(model, source.float(), guided, config.guidance_scale, lmi_kwargs or {})
    ascent = None
    if guided and config.lmi_gradient_scale > 0:
        ascent = _LmiAscent(schedule, denoiser.anchor, config.lmi_gradient_scale, config.clip_x0, lmi_kwargs or {})
    was_training = model.training
    model.eval()
    try:
        x = _initial(schedule, source, start, steps[0][0] if steps else None, generator)
        for t, t_prev in tqdm(steps, desc=sampler, unit="step", disable=not progress):
            eps = denoiser(x, t)
            if ascent is not None:
                eps = ascent(eps, t, x)
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
        network_calls=len(steps) * denoiser.evaluations,
        lmi_calls=len(steps) * (1 if ascent is None else 2) + 1 if guided else 0,
    )
