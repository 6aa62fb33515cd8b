"""STC translator: SSLDM-ISI's space-time conversion blocks as an alternative to gSTA.

Option ``translator_kind="stc"`` (docs/OPTIONS.md). The context latents, folded into channels,
are projected once to ``width`` channels and repeated for every lead time, to which an
explicit lead-time embedding is added; a stack of STC blocks then works on the
(B, T_out, width, h, w) video, and a 1x1 readout gives each frame's mean and log-variance.

STC block: temporal shift -> ResBlock (lead-time scale/shift) -> temporal shift, then spatial
attention -> temporal attention -> spatial attention. Every attention's output starts at zero,
so a fresh block is the shifted ResBlock alone. The temporal attention is causal (lead k sees
leads <= k) and has a relative-position bias. This reuses STLDM's attention modules; SSLDM-ISI's
multi-query, cosine-logit, null-key variant is not reproduced.
"""

from __future__ import annotations

import torch
from torch import nn

from model.blocks import FullSpatialAttention, ResBlock, StepEmbedding, TemporalAttention, TimeEmbedding
from model.config import TranslatorConfig
from model.spacetime import temporal_shift

HEAD_DIM = 32


def zero_output(module: FullSpatialAttention | TemporalAttention) -> nn.Module:
    """Zero an attention's output projection so that its residual block starts as identity."""
    for param in module.to_out.parameters():
        nn.init.zeros_(param)
    return module


class STCBlock(nn.Module):
    """Shifted ResBlock, then spatial -> temporal -> spatial attention, on (B*T, C, h, w)."""

    def __init__(self, dim: int, *, lead_dim: int, heads: int) -> None:
        super().__init__()
        self.res = ResBlock(dim, dim, time_dim=lead_dim, groups=8)
        self.spatial_attn1 = zero_output(FullSpatialAttention(dim, heads=heads, head_dim=HEAD_DIM))
        self.temporal_attn = zero_output(TemporalAttention(dim, heads=heads, head_dim=HEAD_DIM,
                                                           norm="channel", position_bias=True,
                                                           causal=True))
        self.spatial_attn2 = zero_output(FullSpatialAttention(dim, heads=heads, head_dim=HEAD_DIM))

    def forward(self, x: torch.Tensor, lead_emb: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B*T, C, h, w), lead_emb (B*T, lead_dim) -> (B*T, C, h, w)."""
        x = temporal_shift(self.res(temporal_shift(x, frames), lead_emb), frames)
        x = self.spatial_attn1(x)
        n, c, h, w = x.shape
        x = self.temporal_attn(x.reshape(n // frames, frames, c, h, w)).reshape(n, c, h, w)
        return self.spatial_attn2(x)


class STCTranslator(nn.Module):
    """Latents of ``t_in`` frames -> (mean, logvar) of the latents of ``t_out`` frames.

    ``width = max(32, hidden // 2)`` channels and ``max(2, num_blocks // 2)`` blocks of the
    :class:`TranslatorConfig` (the STC blocks see every frame, so they are kept narrower).
    """

    def __init__(self, config: TranslatorConfig, *, t_in: int, t_out: int, channels: int,
                 step_minutes: bool = False, residual: bool = False) -> None:
        super().__init__()
        self.t_out, self.channels, self.residual = t_out, channels, residual
        width = max(32, config.hidden // 2)
        self.proj_in = nn.Conv2d(t_in * channels, width, 3, padding=1)
        self.lead_embed = TimeEmbedding(32, width)  # sinusoid of the lead index 1..T_out
        self.blocks = nn.ModuleList(
            STCBlock(width, lead_dim=width, heads=max(1, width // HEAD_DIM))
            for _ in range(max(2, config.num_blocks // 2))
        )
        self.readout = nn.Conv2d(width, 2 * channels, 1)
        self.step_embed = StepEmbedding(width) if step_minutes else None

    def forward(self, z: torch.Tensor, step: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, t_in, C, h, w) -> mean, logvar, each (B, t_out, C, h, w); ``step`` (B,) minutes
        between frames, used when the model has a step embedding."""
        b, t, c, h, w = z.shape
        context = self.proj_in(z.reshape(b, t * c, h, w))  # (B, width, h, w)
        if self.step_embed is not None and step is not None:
            context = context + self.step_embed(step).to(context.dtype)[:, :, None, None]
        leads = torch.arange(1, self.t_out + 1, device=z.device)
        lead_emb = self.lead_embed(leads).to(context.dtype).repeat(b, 1)  # (B*T_out, width)
        x = context.repeat_interleave(self.t_out, dim=0) + lead_emb[:, :, None, None]
        for block in self.blocks:
            x = block(x, lead_emb, self.t_out)
        out = self.readout(x).reshape(b, self.t_out, 2 * c, h, w)
        mean = out[:, :, :c] + z[:, -1:] if self.residual else out[:, :, :c]
        return mean, out[:, :, c:]

    def zero_mean_output(self) -> None:
        """Zero the readout rows of the mean (see :meth:`Translator.zero_mean_output`)."""
        with torch.no_grad():
            self.readout.weight[: self.channels].zero_()
            if self.readout.bias is not None:
                self.readout.bias[: self.channels].zero_()
