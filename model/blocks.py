"""Building blocks shared by the denoiser: norms, ResBlock, time embedding, attentions.

Shapes: ``B`` batch, ``T`` frames, ``C`` channels, ``H x W`` latent pixels. Convolutions and
spatial attention see frames folded into the batch, ``(B*T, C, H, W)``; temporal attention
sees ``(B, T, C, H, W)`` and folds pixels into the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.spacetime import RelativePositionBias


def layer_norm(x: torch.Tensor, gain: torch.Tensor, dim: int) -> torch.Tensor:
    """Gain-only layer norm over one axis, computed in float32 (eps 1e-5, biased variance)."""
    x32 = x.float()
    centred = x32 - x32.mean(dim=dim, keepdim=True)
    var = centred.square().mean(dim=dim, keepdim=True)  # two passes: faster than var_mean on CPU
    return (centred * (var + 1e-5).rsqrt() * gain).to(x.dtype)


class ChannelNorm(nn.Module):
    """Gain-only layer norm over the channel axis of ``(N, C, H, W)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.g, dim=1)


def group_count(channels: int, groups: int) -> int:
    """The reference falls back to one group when ``groups`` does not divide ``channels``."""
    return groups if channels % groups == 0 else 1


class ResBlock(nn.Module):
    """conv3x3 -> GroupNorm -> (scale, shift from time) -> SiLU -> conv3x3 -> GroupNorm -> SiLU, + skip."""

    def __init__(self, dim_in: int, dim_out: int, *, time_dim: int | None, groups: int) -> None:
        super().__init__()
        self.time_proj = nn.Linear(time_dim, 2 * dim_out) if time_dim is not None else None
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(group_count(dim_out, groups), dim_out)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(group_count(dim_out, groups), dim_out)
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C_in, H, W), time_emb (N, time_dim) -> (N, C_out, H, W)."""
        h = self.norm1(self.conv1(x))
        if self.time_proj is not None and time_emb is not None:
            scale, shift = self.time_proj(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (scale + 1) + shift
        h = F.silu(h)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of the diffusion step -> Linear -> GELU -> Linear."""

    def __init__(self, fourier_dim: int, time_dim: int) -> None:
        super().__init__()
        self.fourier_dim = fourier_dim
        self.linear1 = nn.Linear(fourier_dim, time_dim)
        self.linear2 = nn.Linear(time_dim, time_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) diffusion steps -> (B, time_dim)."""
        half = self.fourier_dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t.float()[:, None] * freqs[None, :]
        features = torch.cat((args.sin(), args.cos()), dim=-1)
        return self.linear2(F.gelu(self.linear1(features)))


class StepEmbedding(nn.Module):
    """The radar time step in minutes -> a (B, dim) vector: TimeEmbedding with a zeroed output.

    Added to what a network already conditions on, it starts as nothing, so a model without
    a step embedding fine-tuned into one starts from its old predictions.
    """

    def __init__(self, dim: int, fourier_dim: int = 32) -> None:
        super().__init__()
        self.embed = TimeEmbedding(fourier_dim, dim)
        nn.init.zeros_(self.embed.linear2.weight)
        nn.init.zeros_(self.embed.linear2.bias)

    def forward(self, step_minutes: torch.Tensor) -> torch.Tensor:
        """step_minutes (B,) minutes between frames -> (B, dim)."""
        return self.embed(step_minutes)


class PatchLinearAttention(nn.Module):
    """Residual, pre-normed linear attention (Katharopoulos) inside ``patch x patch`` windows.

    q is softmaxed over features, k over the positions of a patch; out = q (k^T v).
    """

    def __init__(self, dim: int, *, patch: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.patch, self.heads, self.scale = patch, heads, head_dim**-0.5
        self.norm = ChannelNorm(dim)
        self.to_qkv = nn.Conv2d(dim, 3 * heads * head_dim, 1, bias=False)
        self.to_out = nn.Conv2d(heads * head_dim, dim, 1)
        self.out_norm = ChannelNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) -> (N, C, H, W); H and W must be multiples of the patch."""
        n, _, height, width = x.shape
        p, nh, nw = self.patch, height // self.patch, width // self.patch
        qkv = self.to_qkv(self.norm(x))
        # (N, 3*heads*d, nh*p, nw*p) -> (3, N*heads*nh*nw, d, p*p)
        qkv = qkv.reshape(n, 3, self.heads, -1, nh, p, nw, p).permute(1, 0, 2, 4, 6, 3, 5, 7)
        q, k, v = qkv.reshape(3, n * self.heads * nh * nw, -1, p * p)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = k @ v.transpose(1, 2)  # (n', d, e)
        out = context.transpose(1, 2) @ q  # (n', e, p*p)
        out = out.reshape(n, self.heads, nh, nw, -1, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        out = out.reshape(n, -1, height, width)
        return self.out_norm(self.to_out(out)) + x


class FullSpatialAttention(nn.Module):
    """Residual, pre-normed softmax attention over all pixels of a frame."""

    def __init__(self, dim: int, *, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = ChannelNorm(dim)
        self.to_qkv = nn.Conv2d(dim, 3 * heads * head_dim, 1, bias=False)
        self.to_out = nn.Conv2d(heads * head_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) -> (N, C, H, W)."""
        n, _, height, width = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, 3, self.heads, -1, height * width)
        q, k, v = qkv.permute(1, 0, 2, 4, 3)  # each (N, heads, H*W, d)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(0, 1, 3, 2).reshape(n, -1, height, width)
        return self.to_out(out) + x


class TemporalAttention(nn.Module):
    """Residual, pre-normed softmax attention across the frames of each pixel.

    ``norm="time"`` normalises over the frame axis as the reference code does (STLDM.md 7.1);
    ``norm="channel"`` over channels. No positional code unless ``position_bias`` adds a
    learned relative-position bias to the logits (an option, docs/OPTIONS.md); ``causal``
    lets frame t attend to frames <= t only.
    """

    def __init__(self, dim: int, *, heads: int, head_dim: int, norm: str, position_bias: bool = False,
                 causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.heads, self.norm_axis = heads, {"time": 1, "channel": 2}[norm]
        self.scale = head_dim**-0.5
        self.norm = ChannelNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_k = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_v = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)
        # None by default: STLDM's parameter layout is unchanged
        self.position_bias = RelativePositionBias(heads) if position_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C, H, W) -> (B, T, C, H, W)."""
        b, t, c, height, width = x.shape
        h = layer_norm(x, self.norm.g[:, None], dim=self.norm_axis)
        h = h.permute(0, 3, 4, 1, 2).reshape(b * height * width, t, c)  # pixels into the batch
        q, k, v = (
            proj(h).reshape(b * height * width, t, self.heads, -1).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        # explicit softmax(q k^T / sqrt(d)) v: faster than the fused kernel for a few frames
        attn = (q * self.scale) @ k.transpose(-1, -2)  # (B*H*W, heads, T, T)
        if self.position_bias is not None:
            attn = attn + self.position_bias(t).to(attn.dtype)
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            attn = attn.masked_fill(future, float("-inf"))
        out = attn.softmax(dim=-1) @ v  # (B*H*W, heads, T, d)
        out = self.to_out(out.transpose(1, 2).reshape(b * height * width, t, -1))
        out = out.reshape(b, height, width, t, c).permute(0, 3, 4, 1, 2)
        return out + x
