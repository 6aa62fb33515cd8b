"""Extra denoiser conditions of the SSLDM-ISI options (docs/OPTIONS.md), off by default.

- ``dual_condition``: the context latents (all input frames, folded into channels) plus a
  small full-resolution encoder of the context frames whose head starts at zero (SSLDM-ISI's
  released setting "c").
- ``exceedance_condition`` (a proposal): for each intensity threshold, the fraction of the
  pixels of each latent cell where the last input frame reaches the threshold.

Both enter the denoiser once, at its input, the same for every output frame, and are dropped
together with the translator condition for classifier-free guidance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import STLDMConfig

ENCODER_WIDTH = 16  # channels of the full-resolution context encoder


class ContextEncoder(nn.Module):
    """Context frames (B, T_in, H, W) -> (B, C, H/f, W/f): 3x3 conv, then log2(f) stride-2
    convs, SiLU between, then a zero-initialised 1x1 head (the encoder starts silent)."""

    def __init__(self, t_in: int, channels: int, downsample: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(t_in, ENCODER_WIDTH, 3, padding=1)
        self.down = nn.ModuleList(
            nn.Conv2d(ENCODER_WIDTH, ENCODER_WIDTH, 4, stride=2, padding=1)
            for _ in range(int(math.log2(downsample)))
        )
        self.head = nn.Conv2d(ENCODER_WIDTH, channels, 1)
        for param in self.head.parameters():
            nn.init.zeros_(param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv_in(x))
        for conv in self.down:
            h = F.silu(conv(h))
        return self.head(h)


class ContextCondition(nn.Module):
    """The extra condition channels ``(B, E, h, w)`` of the options in force (E may be 0)."""

    def __init__(self, config: STLDMConfig) -> None:
        super().__init__()
        options, c = config.options, config.latent_channels
        self.t_in, self.downsample = config.t_in, config.vae.downsample
        self.dual = options.dual_condition
        self.thresholds = config.intensity_pixels() if options.exceedance_condition else ()
        self.encoder = ContextEncoder(config.t_in, c, self.downsample) if self.dual else None
        self.channels = (config.t_in * c + c if self.dual else 0) + len(self.thresholds)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        """Extra channels, or None when no option asks for them.

        Parameters
        ----------
        x : (B, T_in, H, W) context frames, pixels in [0, 1].
        z : (B, T_in, C, h, w) context latents (encoder means or samples).

        Returns
        -------
        (B, E, h, w): [context latents (T_in * C), encoder (C)] if ``dual_condition``, then
        one exceedance fraction in [0, 1] per threshold if ``exceedance_condition``.
        """
        if not self.channels:
            return None
        parts = []
        if self.encoder is not None:
            parts += [z.flatten(1, 2), self.encoder(x.to(z.dtype))]
        if self.thresholds:
            taus = torch.tensor(self.thresholds, device=z.device)  # compared in float32
            exceeds = (x[:, -1:].float() >= taus[None, :, None, None]).float()  # (B, K, H, W)
            parts.append(F.avg_pool2d(exceeds, self.downsample).to(z.dtype))
        return torch.cat(parts, dim=1)
