"""The DDPM noise schedule and its reverse steps (ancestral DDPM and DDIM): noise math, no weights.

Symbols (Ho et al. 2020; Song et al. 2021): beta_t the per-step noise variance, alpha_t = 1 - beta_t,
alpha_bar_t = prod_{s <= t} alpha_s, so that x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.
Timesteps are 0-based: t = 0 is the least noisy step, t = T - 1 is (almost) pure noise, and
"t_prev = -1" stands for the clean image (alpha_bar = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..io import InputError


@dataclass
class StepOutput:
    """One reverse step: prev_sample is x_{t_prev}, pred_x0 the clipped estimate of x_0; both (N, C, H, W)."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


def _at(values: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """values[t] shaped to broadcast against (N, C, H, W): a scalar for an int t, (N, 1, 1, 1) for t: (N,)."""
    picked = values[t]
    return picked.view(-1, 1, 1, 1) if picked.ndim else picked


class DDPMSchedule(nn.Module):
    """Linear beta schedule (DDPM: 1e-4 .. 0.02 over T = 1000 steps), stored as buffers (follow .to())."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        if timesteps < 1:
            raise InputError(f"timesteps: expected at least 1, got {timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise InputError(f"beta_start, beta_end: expected 0 < start <= end < 1, got {beta_start}, {beta_end}")
        self.timesteps = timesteps
        # Computed in float64: the cumulative product over 1000 steps loses digits in float32.
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)  # beta_t
        alpha_bar = torch.cumprod(1 - betas, dim=0)  # alpha_bar_t
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])  # alpha_bar_{t-1}
        buffers = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            # Posterior q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, beta_tilde_t) (DDPM eq. 6-7).
            "posterior_variance": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),  # beta_tilde_t
            "posterior_coef_x0": betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            "posterior_coef_xt": (1 - alpha_bar_prev) * (1 - betas).sqrt() / (1 - alpha_bar),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q_sample: x_t = sqrt(alpha_bar_t) x_0 + sigma_t eps with sigma_t = sqrt(1 - alpha_bar_t).

        x0, noise: (N, C, H, W); t: (N,) long -> x_t (N, C, H, W).
        """
        alpha_bar = _at(self.alpha_bar, t)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def predict_x0(self, eps: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """x_0 = (x_t - sigma_t eps) / sqrt(alpha_bar_t), clipped to the data range [-1, 1] if `clip`."""
        alpha_bar = _at(self.alpha_bar, t)
        x0 = (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        return x0.clamp(-1, 1) if clip else x0

    def predict_eps(self, x0: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """predict_x0's inverse: the eps of x_0 at x_t, (x_t - sqrt(alpha_bar_t) x_0) / sigma_t."""
        alpha_bar = _at(self.alpha_bar, t)
        return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    def ddpm_step(
        self,
        eps: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        noise: torch.Tensor | None,
        variance: Literal["posterior", "beta"] = "posterior",
        clip: bool = True,
    ) -> StepOutput:
        """Ancestral step x_t -> x_{t-1} ~ N(posterior mean from the (clipped) x_0, variance).

        variance "posterior": beta_tilde_t; "beta": beta_t (improved-diffusion's "fixedlarge", which
        the paper's code uses). Unclipped, the mean equals 1/sqrt(alpha_t) (x_t - beta_t / sigma_t eps).
        eps, x_t, noise: (N, C, H, W), noise ~ N(0, I) (unused at t = 0, which returns the mean).
        """
        pred_x0 = self.predict_x0(eps, t, x_t, clip)
        mean = _at(self.posterior_coef_x0, t) * pred_x0 + _at(self.posterior_coef_xt, t) * x_t
        if t == 0:
            return StepOutput(prev_sample=mean, pred_x0=pred_x0)
        if noise is None:
            raise InputError("noise: required by ddpm_step when t > 0")
        variances = self.posterior_variance if variance == "posterior" else self.betas
        return StepOutput(prev_sample=mean + _at(variances, t).sqrt() * noise, pred_x0=pred_x0)

    def ddim_timesteps(self, n: int) -> torch.Tensor:
        """n timesteps from T - 1 down to 0, evenly spaced: (n,) long, strictly decreasing."""
        if not 1 <= n <= self.timesteps:
            raise InputError(f"steps: expected 1 .. {self.timesteps} sampling steps, got {n}")
        if n == 1:
            return torch.tensor([self.timesteps - 1])
        return torch.linspace(self.timesteps - 1, 0, n, dtype=torch.float64).round().long()

    def ddim_step(
        self,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        x_t: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        clip: bool = True,
    ) -> StepOutput:
        """DDIM step x_t -> x_{t_prev} (Song et al. eq. 12); t_prev = -1 means the clean image.

        eps, x_t, noise: (N, C, H, W). eta = 0 is deterministic (noise unused); eta = 1 matches the
        DDPM posterior variance when t_prev = t - 1, and needs noise ~ N(0, I).
        """
        pred_x0 = self.predict_x0(eps, t, x_t, clip)
        alpha_bar = self.alpha_bar[t]
        alpha_bar_prev = self.alpha_bar[t_prev] if t_prev >= 0 else alpha_bar.new_tensor(1.0)
        # The eps consistent with the (clipped) x_0 keeps the step on the x_0 estimate (improved-diffusion).
        eps = self.predict_eps(pred_x0, t, x_t)
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        prev = alpha_bar_prev.sqrt() * pred_x0 + (1 - alpha_bar_prev - sigma**2).clamp_min(0).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise InputError("noise: required by ddim_step when eta > 0")
            prev = prev + sigma * noise
        return StepOutput(prev_sample=prev, pred_x0=pred_x0)
