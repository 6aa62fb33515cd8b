"""Spatio-temporal latent denoiser of STLDM (STLDM.md section 3), a U-Net on latent videos.

Notation: x_t (B, T, C, h, w) noisy latents of the T output frames at diffusion step t;
the condition mu (B, T, C, h, w) is the translator's mean; the output is the v-prediction.
Options (docs/OPTIONS.md, all off by default): temporal shifts around every ResBlock, a
second spatial attention per level ("sts"), a relative-position bias in temporal attention,
and ``extra`` condition channels (B, E, h, w) concatenated at the input for every frame.

Speed (issue 14): what depends only on the condition (the condition pyramid, its share of the
first convolution of every down level, the step embedding) is computed once per request by
:meth:`Denoiser.prepare`, and each sampling step runs :meth:`Denoiser.run` on it;
``denoiser(x, t, cond)`` does both. Activations are channels-last inside the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from model.blocks import (
    FullSpatialAttention,
    PatchLinearAttention,
    ResBlock,
    StepEmbedding,
    TemporalAttention,
    TimeEmbedding,
)
from model.config import DenoiserConfig, OptionsConfig
from model.spacetime import temporal_shift


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in channels-last memory (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def channels_last_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) stored as channels-last frames, the layout :meth:`Denoiser.run` returns."""
    b, t, c, h, w = x.shape
    return channels_last(x.reshape(b * t, c, h, w)).reshape(b, t, c, h, w)


@dataclass
class Prepared:
    """The condition of a request as the denoiser uses it at every step (:meth:`Denoiser.prepare`).

    ``terms[n]``: the two constant terms of down level n's first ResBlock (None: a zero
    condition); ``inputs[n]``: instead, the condition input (B*T, E_n, h_n, w_n) itself, for
    temporal shifts; ``step_emb``: (B, time_dim) step embedding or None.
    """

    terms: list[tuple[torch.Tensor, torch.Tensor] | None]
    inputs: list[torch.Tensor | None] | None
    step_emb: torch.Tensor | None


def spatial_attention(dim: int, patch: int | None, config: DenoiserConfig) -> nn.Module:
    if patch is None:
        return FullSpatialAttention(dim, heads=config.heads, head_dim=config.head_dim)
    return PatchLinearAttention(dim, patch=patch, heads=config.heads, head_dim=config.head_dim)


def temporal_attention(dim: int, config: DenoiserConfig, options: OptionsConfig) -> nn.Module | None:
    if not config.temporal_attention:
        return None  # the "spatial only" ablation: identity
    return TemporalAttention(dim, heads=config.heads, head_dim=config.head_dim, norm=config.temporal_norm,
                             position_bias=options.temporal_position_bias)


def second_spatial_attention(dim: int, patch: int | None, config: DenoiserConfig,
                             options: OptionsConfig) -> nn.Module | None:
    """The extra spatial attention of ``attention_order="sts"``, output zeroed: starts as identity."""
    if options.attention_order != "sts":
        return None
    module = spatial_attention(dim, patch, config)
    if isinstance(module, PatchLinearAttention):
        nn.init.zeros_(module.out_norm.g)
    elif isinstance(module, FullSpatialAttention):
        for param in module.to_out.parameters():
            nn.init.zeros_(param)
    return module


def frames_apply(module: nn.Module | None, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Apply temporal attention to (B*T, C, H, W) frames; identity when module is None."""
    if module is None:
        return x
    n, c, h, w = x.shape
    return module(x.reshape(n // frames, frames, c, h, w)).reshape(n, c, h, w)


class DownLevel(nn.Module):
    """concat condition -> ResBlock(2C->C, time) -> spatial attn [S skip] -> ResBlock(C->C)
    -> temporal attn [T skip] -> downsample (or a 3x3 channel change at the deepest level)."""

    def __init__(self, dim: int, dim_out: int, *, patch: int | None, last: bool, time_dim: int,
                 config: DenoiserConfig, options: OptionsConfig, extra: int = 0) -> None:
        super().__init__()
        self.res1 = ResBlock(2 * dim + extra, dim, time_dim=time_dim, groups=config.groups)
        self.spatial_attn = spatial_attention(dim, patch, config)
        self.res2 = ResBlock(dim, dim, time_dim=None, groups=config.groups)  # STLDM.md 7.4
        self.temporal_attn = temporal_attention(dim, config, options)
        self.spatial_attn2 = second_spatial_attention(dim, patch, config, options)
        if last:
            self.downsample = nn.Conv2d(dim, dim_out, 3, padding=1)
        else:
            self.downsample = nn.Conv2d(dim, dim_out, 4, stride=2, padding=1)


class MidLevel(nn.Module):
    def __init__(self, dim: int, *, time_dim: int, config: DenoiserConfig, options: OptionsConfig) -> None:
        super().__init__()
        self.res1 = ResBlock(dim, dim, time_dim=time_dim, groups=config.groups)
        self.spatial_attn = FullSpatialAttention(dim, heads=config.heads, head_dim=config.head_dim)
        self.res2 = ResBlock(dim, dim, time_dim=time_dim, groups=config.groups)
        self.temporal_attn = temporal_attention(dim, config, options)
        self.spatial_attn2 = second_spatial_attention(dim, None, config, options)
        self.res3 = ResBlock(dim, dim, time_dim=time_dim, groups=config.groups)


class UpLevel(nn.Module):
    """upsample -> temporal attn -> concat T skip -> ResBlock -> spatial attn -> concat S skip
    -> ResBlock. With ``attention_order="sts"`` a spatial attention precedes the temporal one."""

    def __init__(self, dim: int, skip: int, dim_out: int, *, patch: int | None, first: bool,
                 time_dim: int, config: DenoiserConfig, options: OptionsConfig) -> None:
        super().__init__()
        if first:
            self.upsample: nn.Module = nn.Conv2d(dim, dim, 3, padding=1)
        else:
            self.upsample = nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1)
        self.spatial_attn = spatial_attention(dim, patch, config)
        self.res1 = ResBlock(dim + skip, dim, time_dim=time_dim, groups=config.groups)
        self.temporal_attn = temporal_attention(dim, config, options)
        self.spatial_attn2 = second_spatial_attention(dim, patch, config, options)
        self.res2 = ResBlock(dim + skip, dim_out, time_dim=time_dim, groups=config.groups)


class Denoiser(nn.Module):
    """v-prediction U-Net: ``denoiser(x_t, t, cond)`` -> v, all (B, T, C, h, w).

    ``extra_channels`` widens the first ResBlock's input for per-sample condition channels
    (dual conditioning, exceedance channels), concatenated after ``cond`` at level 0.
    """

    def __init__(self, config: DenoiserConfig, *, channels: int, options: OptionsConfig | None = None,
                 extra_channels: int = 0, step_minutes: bool = False) -> None:
        super().__init__()
        self.config = config
        options = options or OptionsConfig()
        self.shift = options.temporal_shift
        self.extra_channels = extra_channels
        base = config.base_channels
        levels = len(config.channel_mults)
        dims = [channels] + [base * m for m in config.channel_mults]
        time_dim = 4 * base
        patches = [
            None if config.patch_size is None else config.patch_size // 2**n for n in range(levels)
        ]
        self.time_embed = TimeEmbedding(base, time_dim)
        # the radar step, added to the diffusion-time embedding (zero at first)
        self.step_embed = StepEmbedding(time_dim) if step_minutes else None
        self.down = nn.ModuleList(
            DownLevel(dims[n], dims[n + 1], patch=patches[n], last=n == levels - 1,
                      time_dim=time_dim, config=config, options=options,
                      extra=extra_channels if n == 0 else 0)
            for n in range(levels)
        )
        # Condition pyramid; the deepest conv is never used but is part of the published
        # checkpoint layout (STLDM.md 7.5), so it is kept for weight compatibility.
        self.cond_down = nn.ModuleList(
            nn.Conv2d(dims[n], dims[n + 1], 4, stride=2, padding=1) for n in range(levels)
        )
        self.mid = MidLevel(dims[-1], time_dim=time_dim, config=config, options=options)
        self.up = nn.ModuleList(
            UpLevel(dims[levels - n], dims[levels - n - 1], dims[levels - n - 1],
                    patch=patches[levels - n - 1], first=n == 0, time_dim=time_dim, config=config,
                    options=options)
            for n in range(levels)
        )

    def condition_pyramid(self, cond: torch.Tensor | None, like: torch.Tensor,
                          null: torch.Tensor | None) -> list[torch.Tensor]:
        """Condition at every level; zeros for the null condition (rows where ``null`` is True)."""
        levels = len(self.down)
        if cond is None:
            return [None] * levels  # type: ignore[list-item]
        n, c, h, w = like.shape
        keep = None if null is None else (~null).to(cond.dtype).repeat_interleave(n // null.shape[0])
        pyramid = []
        level = channels_last(cond.reshape(n, c, h, w))
        for i in range(levels):
            pyramid.append(level if keep is None else level * keep[:, None, None, None])
            if i < levels - 1:
                level = self.cond_down[i](level)
        return pyramid

    def extra_condition(self, extra: torch.Tensor | None, like: torch.Tensor, cond: torch.Tensor | None,
                        null: torch.Tensor | None) -> torch.Tensor | None:
        """(B*T, E, h, w) extra channels repeated for every frame; zeros wherever the translator
        condition is dropped (``cond`` None or ``null`` rows), so guidance drops both together."""
        if not self.extra_channels:
            return None
        n, _, h, w = like.shape
        if extra is None or cond is None:
            return like.new_zeros(n, self.extra_channels, h, w)
        if null is not None:
            extra = extra * (~null).to(extra.dtype)[:, None, None, None]
        return extra.to(like.dtype).repeat_interleave(n // extra.shape[0], dim=0)

    def res(self, block: nn.Module, x: torch.Tensor, temb: torch.Tensor | None, frames: int) -> torch.Tensor:
        """A ResBlock, between temporal shifts when the ``temporal_shift`` option is on."""
        if not self.shift:
            return block(x, temb)
        return temporal_shift(block(temporal_shift(x, frames), temb), frames)

    def prepare(self, cond: torch.Tensor | None, like: torch.Tensor, *, null: torch.Tensor | None = None,
                extra: torch.Tensor | None = None, step: torch.Tensor | None = None) -> Prepared:
        """What the network computes from its condition alone, once per request.

        Parameters
        ----------
        cond : (B, T, C, h, w) translator mean, or None for the null condition (zeros).
        like : (B, T, C, h, w) a tensor of the shape, dtype and device of the noisy latents.
        null, extra, step : as in :meth:`forward`.

        Returns
        -------
        Prepared: per down level, the condition input of its first ResBlock (the condition at
        that scale, then at level 0 the extra channels) as that block's constant terms, or as
        the tensor itself when temporal shifts (which mix it with x) are on; and the step
        embedding.
        """
        b, frames, c, h, w = like.shape
        flat = like.reshape(b * frames, c, h, w)  # only its shape, dtype and device are used
        pyramid = self.condition_pyramid(cond, flat, null)
        first_extra = self.extra_condition(extra, flat, cond, null)
        inputs: list[torch.Tensor | None] = []
        for i, level_cond in enumerate(pyramid):
            parts = [] if level_cond is None else [level_cond]
            if i == 0 and first_extra is not None:
                if level_cond is None:  # the extra channels sit after the (zero) condition
                    parts.append(torch.zeros_like(flat))
                parts.append(channels_last(first_extra))
            inputs.append(torch.cat(parts, dim=1) if parts else None)
        if self.shift:  # the shifts mix condition and x channels: keep the concatenation
            return Prepared([None] * len(inputs), inputs, self._step_embedding(step))
        terms = [None if x is None else cast("DownLevel", level).res1.constant_terms(x)
                 for level, x in zip(self.down, inputs, strict=True)]
        return Prepared(terms, None, self._step_embedding(step))

    def _step_embedding(self, step: torch.Tensor | None) -> torch.Tensor | None:
        return None if self.step_embed is None or step is None else self.step_embed(step)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, *,
                null: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                step: torch.Tensor | None = None) -> torch.Tensor:
        """Predict v.

        Parameters
        ----------
        x : (B, T, C, h, w) noisy latents x_t.
        t : (B,) integer diffusion steps in [0, train_steps).
        cond : (B, T, C, h, w) translator mean, or None for the null condition (zeros).
        null : (B,) bool, optional; rows that take the null condition although ``cond`` is given.
        extra : (B, E, h, w), optional; extra condition channels (E = ``extra_channels``), the
            same for every frame; None gives zeros. Dropped with ``cond``.
        step : (B,) minutes between frames; used when the model has a step embedding (never
            dropped: the null condition still knows the step).

        Returns
        -------
        (B, T, C, h, w) v-prediction.
        """
        return self.run(x, t, self.prepare(cond, x, null=null, extra=extra, step=step))

    def run(self, x: torch.Tensor, t: torch.Tensor, prepared: Prepared) -> torch.Tensor:
        """Predict v from x (B, T, C, h, w) at steps t (B,) under a condition from :meth:`prepare`.

        Returns (B, T, C, h, w) in the channels-last frame layout of :func:`channels_last_frames`
        (a view of (B*T, C, h, w) channels-last), whatever the layout of ``x``.
        """
        b, frames, c, h, w = x.shape
        temb = self.time_embed(t)
        if prepared.step_emb is not None:
            temb = temb + prepared.step_emb
        temb = temb.repeat_interleave(frames, dim=0)  # (B*T, time_dim)
        out = channels_last(x.reshape(b * frames, c, h, w))
        skips = []
        for i, level in enumerate(cast("list[DownLevel]", self.down)):
            if prepared.inputs is not None:  # temporal shifts: the concatenation itself
                const = prepared.inputs[i]
                if const is None:
                    const = torch.zeros_like(out)
                out = self.res(level.res1, torch.cat((out, const), dim=1), temb, frames)
            else:  # x alone, plus the condition's precomputed terms
                out = level.res1(out, temb, const=prepared.terms[i])
            out = level.spatial_attn(out)
            spatial_skip = out
            out = self.res(level.res2, out, None, frames)
            out = frames_apply(level.temporal_attn, out, frames)
            if level.spatial_attn2 is not None:  # spatial -> temporal -> spatial
                out = level.spatial_attn2(out)
            skips.append((spatial_skip, out))
            out = level.downsample(out)

        mid = self.mid
        out = self.res(mid.res1, out, temb, frames)
        out = mid.spatial_attn(out)
        out = self.res(mid.res2, out, temb, frames)
        out = frames_apply(mid.temporal_attn, out, frames)
        if mid.spatial_attn2 is not None:
            out = mid.spatial_attn2(out)
        out = self.res(mid.res3, out, temb, frames)

        for up in cast("list[UpLevel]", self.up):
            spatial_skip, temporal_skip = skips.pop()
            out = up.upsample(out)
            if up.spatial_attn2 is not None:  # spatial -> temporal, then spatial after res1
                out = up.spatial_attn2(out)
            out = frames_apply(up.temporal_attn, out, frames)
            out = self.res(up.res1, torch.cat((out, temporal_skip), dim=1), temb, frames)
            out = up.spatial_attn(out)
            out = self.res(up.res2, torch.cat((out, spatial_skip), dim=1), temb, frames)
        return channels_last(out).reshape(b, frames, -1, h, w)
