"""Building blocks shared by the denoiser: norms, ResBlock, time embedding, attentions.

Shapes: ``B`` batch, ``T`` frames, ``C`` channels, ``H x W`` latent pixels. Convolutions and
spatial attention see frames folded into the batch, ``(B*T, C, H, W)``; temporal attention
sees ``(B, T, C, H, W)`` and folds pixels into the batch.

Speed (issue 14): every block accepts any memory layout and is fastest on channels-last
activations (``(N, C, H, W)`` stored as ``(N, H, W, C)``), which the denoiser uses: oneDNN's
convolutions run on it without reorders, a norm over channels is one fused ``layer_norm`` over
the contiguous last axis, and attention reads its heads without transposes. Element-wise
tails are fused (``addcmul``) and run in place when no gradient is recorded. The plain code
these blocks replace is kept in ``tests/model/eager_oracle.py``, and they match it to 1e-5.
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


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.softmax(dim)``; a bfloat16 CPU tensor is computed in float32 and cast back, 2-6x
    faster than PyTorch's bfloat16 CPU kernel."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return torch.softmax(x, dim, dtype=torch.float32).to(x.dtype)
    return x.softmax(dim)


def channel_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Gain-only layer norm over the channels of ``(N, C, H, W)`` (eps 1e-5).

    Returns ``(N, C, H, W)`` channels-last; on a channels-last input the channels are the
    contiguous last axis, so this is one ``layer_norm`` kernel and no copy. A bfloat16 input
    stays bfloat16: PyTorch's kernel accumulates in float32, so its result is the float32
    norm rounded, without two conversions of the whole tensor (at 16 channels and 400 frames
    of 16 x 16, 6.6 ms against 13.3 ms at one thread).
    """
    c = x.shape[1]
    return F.layer_norm(x.permute(0, 2, 3, 1), (c,), gain.reshape(c), eps=1e-5).permute(0, 3, 1, 2)


class ChannelNorm(nn.Module):
    """Gain-only layer norm over the channel axis of ``(N, C, H, W)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(x, self.g)


def group_count(channels: int, groups: int) -> int:
    """The reference falls back to one group when ``groups`` does not divide ``channels``."""
    return groups if channels % groups == 0 else 1


def in_place(x: torch.Tensor) -> bool:
    """Whether ``x`` may be overwritten: nothing records it for a backward pass."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def group_norm(x: torch.Tensor, norm: nn.GroupNorm, scale: torch.Tensor | None = None,
               shift: torch.Tensor | None = None) -> torch.Tensor:
    """``norm(x) * (scale + 1) + shift`` for x (N, C, H, W) and scale, shift (N, C, 1, 1) or None.

    PyTorch's channels-last CPU kernel is slow with fewer than 8 channels per group (it
    vectorises over a group's channels): for a float32 channels-last CPU tensor with such
    groups, the statistics come from two column sums over the pixels (sum and sum of squares,
    combined in float64 as that kernel combines them) and the normalisation, the norm's affine
    and the modulation are one ``addcmul`` pass, about 2x faster. Elsewhere ``F.group_norm``.
    """
    if (x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16)
            or x.shape[1] // norm.num_groups >= 8
            or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)):
        h = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        return h if scale is None or shift is None else torch.addcmul(shift, h, scale + 1)
    n, c, height, width = x.shape
    groups = norm.num_groups
    pixels = x.permute(0, 2, 3, 1).reshape(n, height * width, c)  # a view: channels-last
    count = height * width * (c // groups)
    if pixels.dtype != torch.float32:  # statistics in float32, as for a float32 input
        pixels = pixels.float()
    mean = pixels.sum(dim=1).double().reshape(n, groups, -1).sum(dim=-1) / count  # (N, G)
    square = pixels.square().sum(dim=1).double().reshape(n, groups, -1).sum(dim=-1) / count
    rstd = ((square - mean.square()).clamp_min(0) + norm.eps).rsqrt()
    a = rstd.repeat_interleave(c // groups, dim=1).float() * norm.weight  # (N, C)
    b = norm.bias - (mean * rstd).repeat_interleave(c // groups, dim=1).float() * norm.weight
    if scale is not None and shift is not None:
        a, b = a * (scale[:, :, 0, 0] + 1), torch.addcmul(shift[:, :, 0, 0], b, scale[:, :, 0, 0] + 1)
    return torch.addcmul(b[:, :, None, None].to(x.dtype), x, a[:, :, None, None].to(x.dtype))


class ResBlock(nn.Module):
    """conv3x3 -> GroupNorm -> (scale, shift from time) -> SiLU -> conv3x3 -> GroupNorm -> SiLU, + skip.

    The input may be split: ``x`` then carries the first channels, and the rest are a
    *constant input* (the denoiser's condition, the same at every sampling step) whose share of
    ``conv1`` and of the skip is computed once by :meth:`constant_terms` and added, exactly as
    if the two had been concatenated.
    """

    def __init__(self, dim_in: int, dim_out: int, *, time_dim: int | None, groups: int) -> None:
        super().__init__()
        self.time_proj = nn.Linear(time_dim, 2 * dim_out) if time_dim is not None else None
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(group_count(dim_out, groups), dim_out)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(group_count(dim_out, groups), dim_out)
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def constant_terms(self, const: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The shares of conv1 and of the skip of the last ``E`` input channels, no biases.

        const : (N, E, H, W) the constant input -> two (N, C_out, H, W) tensors.
        """
        if not isinstance(self.skip, nn.Conv2d):
            raise ValueError("a ResBlock without a skip convolution takes no constant input")
        e = const.shape[1]
        h = F.conv2d(const, self.conv1.weight[:, -e:], None, padding=1)
        return h, F.conv2d(const, self.skip.weight[:, -e:], None)

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None, *,
                const: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (N, C_in, H, W), time_emb (N, time_dim) -> (N, C_out, H, W).

        With fewer than ``C_in`` channels in ``x``, the missing last channels are the constant
        input: ``const`` holds their :meth:`constant_terms`, None when that input is zero.
        """
        split = x.shape[1] != self.conv1.in_channels
        if split:
            cx = x.shape[1]
            h = F.conv2d(x, self.conv1.weight[:, :cx], self.conv1.bias, padding=1)
            conv = self.skip
            if not isinstance(conv, nn.Conv2d):
                raise ValueError("a ResBlock without a skip convolution takes no constant input")
            skip = F.conv2d(x, conv.weight[:, :cx], conv.bias)
            if const is not None:
                h, skip = h + const[0], skip + const[1]
        else:
            h, skip = self.conv1(x), self.skip(x)
        scale = shift = None
        if self.time_proj is not None and time_emb is not None:
            scale, shift = self.time_proj(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
        h = group_norm(h, self.norm1, scale, shift)  # norm, then h * (scale + 1) + shift
        h = F.silu(h, inplace=in_place(h))
        h = group_norm(self.conv2(h), self.norm2)
        h = F.silu(h, inplace=in_place(h))
        return h.add_(skip) if in_place(h) else h + skip


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
        features = torch.cat((args.sin(), args.cos()), dim=-1).to(self.linear1.weight.dtype)
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
        """x (N, C, H, W) -> (N, C, H, W) channels-last; H and W must be multiples of the patch."""
        n, _, height, width = x.shape
        p, nh, nw, heads = self.patch, height // self.patch, width // self.patch, self.heads
        qkv = self.to_qkv(self.norm(x)).permute(0, 2, 3, 1)  # (N, H, W, 3*heads*d)
        # (N, nh, p, nw, p, 3, heads, d) -> (3, N*heads*nh*nw, p*p, d): one copy into patches
        qkv = qkv.reshape(n, nh, p, nw, p, 3, heads, -1).permute(5, 0, 6, 1, 3, 2, 4, 7)
        q, k, v = qkv.reshape(3, n * heads * nh * nw, p * p, -1)
        q = softmax(q, dim=-1)  # over features
        q = q.mul_(self.scale) if in_place(q) else q * self.scale
        k = softmax(k, dim=-2)  # over the positions of the patch
        out = q @ (k.transpose(1, 2) @ v)  # (n', p*p, d) @ (n', d, e) -> (n', p*p, e)
        # (N, heads, nh, nw, p, p, e) -> (N, H, W, heads*e): one copy back into the frame
        out = out.reshape(n, heads, nh, nw, p, p, -1).permute(0, 2, 4, 3, 5, 1, 6)
        out = out.reshape(n, height, width, -1).permute(0, 3, 1, 2)
        out = self.out_norm(self.to_out(out))
        return out.add_(x) if in_place(out) else out + x


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
        qkv = self.to_qkv(self.norm(x)).permute(0, 2, 3, 1)  # (N, H, W, 3*heads*d)
        qkv = qkv.reshape(n, height * width, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, H*W, d), strided views
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, height, width, -1).permute(0, 3, 1, 2)
        out = self.to_out(out)
        return out.add_(x) if in_place(out) else out + x


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
        """x (B, T, C, H, W) -> (B, T, C, H, W), in the layout of ``x``."""
        b, t, c, height, width = x.shape
        pixels = b * height * width
        if self.norm_axis == 2:  # over channels: contiguous for channels-last frames
            h = F.layer_norm(x.permute(0, 1, 3, 4, 2), (c,), self.norm.g.reshape(c), eps=1e-5)
        else:
            h = layer_norm(x, self.norm.g[:, None], dim=1).permute(0, 1, 3, 4, 2)
        h = h.permute(0, 2, 3, 1, 4).reshape(pixels, t, c)  # (B, H, W, T, C): pixels into the batch
        weight = torch.cat((self.to_q.weight, self.to_k.weight, self.to_v.weight))
        qkv = F.linear(h, weight).reshape(pixels, t, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B*H*W, heads, T, d)
        # explicit softmax(q k^T / sqrt(d)) v: faster than the fused kernel for a few frames
        attn = (q * self.scale) @ k.transpose(-1, -2)  # (B*H*W, heads, T, T)
        if self.position_bias is not None:
            attn = attn + self.position_bias(t).to(attn.dtype)
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            attn = attn.masked_fill(future, float("-inf"))
        out = softmax(attn, dim=-1) @ v  # (B*H*W, heads, T, d)
        out = self.to_out(out.transpose(1, 2).reshape(pixels, t, -1))
        out = out.reshape(b, height, width, t, c).permute(0, 3, 4, 1, 2)
        return x + out  # in the layout of x: the transpose back and the residual in one pass
