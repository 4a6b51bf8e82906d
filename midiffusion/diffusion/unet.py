"""The epsilon-prediction UNet (DDPM / improved-diffusion layout): a plain nn.Module, no noise math.

The LMI condition enters as extra input channels concatenated to x_t; the timestep enters through a
sinusoidal embedding added inside every residual block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import unet_feature_map_sizes
from ..io import InputError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Transformer / DDPM): t (N,) -> (N, dim) of cos and sin at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd keeps GroupNorm valid for the tiny widths used in tests (e.g. 8 channels -> 8 groups).
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a block's last layer, so each residual block starts as the identity."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between; (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            _norm(in_channels, groups), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            _norm(out_channels, groups),
            nn.SiLU(),
            nn.Dropout(dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual; shape-preserving."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # (N, 3C, H, W) -> three (N, heads, H*W, C/heads)
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResAttnBlock(nn.Module):
    """A ResBlock, followed by self-attention when the level has it; (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, res: ResBlock, attention: AttentionBlock | None = None):
        super().__init__()
        self.res = res
        self.attention = attention or nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attention(self.res(x, emb))


class UNet(nn.Module):
    """eps_theta(x_t, t, condition): predicts the noise eps in x_t.

    Paper size: base_channels 64, channel_mults (1, 2, 2, 2), attention at 16 x 16 feature maps
    for 128 x 128 input. attention_resolutions are feature-map sizes, so they refer to image_size:
    the resolution of level i is image_size / 2**i. in_channels counts x_t plus the condition.
    mixed_precision: on CUDA, run the layers in bfloat16 (autocast) and return float32 eps.
    cpu_bfloat16: the same on a CPU, worth it only where the CPU computes in bfloat16 natively (AMX,
    AVX512-BF16). Neither has an effect on other devices.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 2, 2),
        attention_resolutions: tuple[int, ...] = (16,),
        num_res_blocks: int = 2,
        dropout: float = 0.0,
        image_size: int = 128,
        head_channels: int = 32,
        norm_groups: int = 32,
        mixed_precision: bool = False,
        cpu_bfloat16: bool = False,
    ):
        super().__init__()
        levels = len(channel_mults)
        resolutions = unet_feature_map_sizes(image_size, channel_mults, attention_resolutions)
        self.in_channels = in_channels
        self.mixed_precision = mixed_precision
        self.cpu_bfloat16 = cpu_bfloat16
        self.base_channels = base_channels
        self.downsampling = 2 ** (levels - 1)
        emb_dim = 4 * base_channels

        def block(cin: int, cout: int, attention: bool) -> ResAttnBlock:
            return ResAttnBlock(
                ResBlock(cin, cout, emb_dim, dropout, norm_groups),
                AttentionBlock(cout, head_channels, norm_groups) if attention else None,
            )

        self.time_embed = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for i, (mult, resolution) in enumerate(zip(channel_mults, resolutions)):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, mult * base_channels, resolution in attention_resolutions))
                ch = mult * base_channels
                skips.append(ch)
            if i < levels - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        # The bottleneck always has attention (DDPM, improved-diffusion).
        self.middle = nn.ModuleList([block(ch, ch, attention=True), block(ch, ch, attention=False)])
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            for j in range(num_res_blocks + 1):
                attention = resolutions[i] in attention_resolutions
                self.up.append(block(ch + skips.pop(), channel_mults[i] * base_channels, attention))
                ch = channel_mults[i] * base_channels
                if i > 0 and j == num_res_blocks:
                    self.up.append(Upsample(ch))
        self.out = nn.Sequential(_norm(ch, norm_groups), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, 1, H, W) noisy image x_t; t: (N,) long timesteps; cond: (N, in_channels - 1, H, W), None = zeros
        (the dropped condition). Returns the predicted eps, (N, out_channels, H, W)."""
        if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise InputError(f"x: spatial size {tuple(x.shape[-2:])} is not divisible by {self.downsampling}")
        if cond is None:
            cond = x.new_zeros(x.shape[0], self.in_channels - x.shape[1], *x.shape[2:])
        bfloat16 = {"cuda": self.mixed_precision, "cpu": self.cpu_bfloat16}.get(x.device.type, False)
        with torch.autocast(x.device.type if bfloat16 else "cpu", dtype=torch.bfloat16, enabled=bfloat16):
            return self._eps(x, t, cond).float()

    def _eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.base_channels))
        h = self.input_conv(torch.cat([x, cond], dim=1))
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResAttnBlock) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            # Decoder blocks take the matching encoder output as extra channels; Upsample takes none.
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, ResAttnBlock) else layer(h)
        return self.out(h)
