"""The denoiser's forward pass and DDIM loop as written before the speed work (issue 14), kept
as the oracle that the fast implementation is tested against.

Straight NCHW code: the condition pyramid rebuilt at every call, concatenations, explicit
permutes and the norms written out. It reads the parameters of the modules of
:mod:`model.blocks` and :mod:`model.denoiser`, so both run on the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.spacetime import temporal_shift


def layer_norm(x: torch.Tensor, gain: torch.Tensor, dim: int) -> torch.Tensor:
    x32 = x.float()
    centred = x32 - x32.mean(dim=dim, keepdim=True)
    var = centred.square().mean(dim=dim, keepdim=True)
    return (centred * (var + 1e-5).rsqrt() * gain).to(x.dtype)


def resblock(block, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
    h = block.norm1(block.conv1(x))
    if block.time_proj is not None and time_emb is not None:
        scale, shift = block.time_proj(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
        h = h * (scale + 1) + shift
    h = F.silu(h)
    h = F.silu(block.norm2(block.conv2(h)))
    return h + block.skip(x)


def patch_attention(m, x: torch.Tensor) -> torch.Tensor:
    n, _, height, width = x.shape
    p, nh, nw = m.patch, height // m.patch, width // m.patch
    qkv = m.to_qkv(layer_norm(x, m.norm.g, dim=1))
    qkv = qkv.reshape(n, 3, m.heads, -1, nh, p, nw, p).permute(1, 0, 2, 4, 6, 3, 5, 7)
    q, k, v = qkv.reshape(3, n * m.heads * nh * nw, -1, p * p)
    q = q.softmax(dim=-2) * m.scale
    k = k.softmax(dim=-1)
    context = k @ v.transpose(1, 2)
    out = context.transpose(1, 2) @ q
    out = out.reshape(n, m.heads, nh, nw, -1, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(n, -1, height, width)
    return layer_norm(m.to_out(out), m.out_norm.g, dim=1) + x


def full_attention(m, x: torch.Tensor) -> torch.Tensor:
    n, _, height, width = x.shape
    qkv = m.to_qkv(layer_norm(x, m.norm.g, dim=1)).reshape(n, 3, m.heads, -1, height * width)
    q, k, v = qkv.permute(1, 0, 2, 4, 3)
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.permute(0, 1, 3, 2).reshape(n, -1, height, width)
    return m.to_out(out) + x


def temporal_attention(m, x: torch.Tensor) -> torch.Tensor:
    b, t, c, height, width = x.shape
    h = layer_norm(x, m.norm.g[:, None], dim=m.norm_axis)
    h = h.permute(0, 3, 4, 1, 2).reshape(b * height * width, t, c)
    q, k, v = (
        proj(h).reshape(b * height * width, t, m.heads, -1).transpose(1, 2)
        for proj in (m.to_q, m.to_k, m.to_v)
    )
    attn = (q * m.scale) @ k.transpose(-1, -2)
    if m.position_bias is not None:
        attn = attn + m.position_bias(t).to(attn.dtype)
    if m.causal:
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        attn = attn.masked_fill(future, float("-inf"))
    out = attn.softmax(dim=-1) @ v
    out = m.to_out(out.transpose(1, 2).reshape(b * height * width, t, -1))
    out = out.reshape(b, height, width, t, c).permute(0, 3, 4, 1, 2)
    return out + x


def spatial(m, x: torch.Tensor) -> torch.Tensor:
    from model.blocks import PatchLinearAttention

    return patch_attention(m, x) if isinstance(m, PatchLinearAttention) else full_attention(m, x)


def frames_apply(m, x: torch.Tensor, frames: int) -> torch.Tensor:
    if m is None:
        return x
    n, c, h, w = x.shape
    return temporal_attention(m, x.reshape(n // frames, frames, c, h, w)).reshape(n, c, h, w)


def denoiser_forward(d, x, t, cond=None, *, null=None, extra=None, step=None) -> torch.Tensor:
    """The pre-speed ``Denoiser.forward`` of the module ``d``."""
    b, frames, c, h, w = x.shape
    temb = d.time_embed(t)
    if d.step_embed is not None and step is not None:
        temb = temb + d.step_embed(step)
    temb = temb.repeat_interleave(frames, dim=0)
    out = x.reshape(b * frames, c, h, w)
    levels = len(d.down)
    if cond is None:
        conds = [None] * levels
    else:
        n = out.shape[0]
        keep = None if null is None else (~null).to(cond.dtype).repeat_interleave(n // null.shape[0])
        conds, level = [], cond.reshape(n, c, h, w)
        for i in range(levels):
            conds.append(level if keep is None else level * keep[:, None, None, None])
            if i < levels - 1:
                level = d.cond_down[i](level)
    first_extra = d.extra_condition(extra, out, cond, null)

    def res(block, y, emb):
        if not d.shift:
            return resblock(block, y, emb)
        return temporal_shift(resblock(block, temporal_shift(y, frames), emb), frames)

    skips = []
    for level, level_cond in zip(d.down, conds, strict=True):
        if level_cond is None:
            level_cond = torch.zeros_like(out)
        inputs = (out, level_cond) if first_extra is None else (out, level_cond, first_extra)
        first_extra = None
        out = res(level.res1, torch.cat(inputs, dim=1), temb)
        out = spatial(level.spatial_attn, out)
        spatial_skip = out
        out = res(level.res2, out, None)
        out = frames_apply(level.temporal_attn, out, frames)
        if level.spatial_attn2 is not None:
            out = spatial(level.spatial_attn2, out)
        skips.append((spatial_skip, out))
        out = level.downsample(out)
    mid = d.mid
    out = res(mid.res1, out, temb)
    out = spatial(mid.spatial_attn, out)
    out = res(mid.res2, out, temb)
    out = frames_apply(mid.temporal_attn, out, frames)
    if mid.spatial_attn2 is not None:
        out = spatial(mid.spatial_attn2, out)
    out = res(mid.res3, out, temb)
    for up in d.up:
        spatial_skip, temporal_skip = skips.pop()
        out = up.upsample(out)
        if up.spatial_attn2 is not None:
            out = spatial(up.spatial_attn2, out)
        out = frames_apply(up.temporal_attn, out, frames)
        out = res(up.res1, torch.cat((out, temporal_skip), dim=1), temb)
        out = spatial(up.spatial_attn, out)
        out = res(up.res2, torch.cat((out, spatial_skip), dim=1), temb)
    return out.reshape(b, frames, -1, h, w)


def ddim_step(scheduler, v, t: int, t_prev: int, sample):
    """The pre-speed eta = 0 ``DDIMScheduler.step``."""
    steps = torch.full((sample.shape[0],), t, dtype=torch.long)
    x0 = scheduler.predict_x0(sample, v, steps)
    if t_prev < 0:
        return x0
    eps = scheduler.predict_noise(sample, x0, steps)
    a_prev = scheduler.alphas_cumprod[t_prev]
    c = (1 - a_prev).sqrt()
    return x0 * a_prev.sqrt().item() + c.item() * eps


def sample_latents(denoiser, scheduler, cond, noise, *, steps=20, guidance=1.0, extra=None,
                   step=None) -> torch.Tensor:
    """The pre-speed DDIM loop: both passes in one batch, the network rebuilt every step."""
    n = noise.shape[0]
    x = noise
    null = None
    if guidance != 0:
        cond = torch.cat((cond, cond))
        extra = None if extra is None else torch.cat((extra, extra))
        step = None if step is None else torch.cat((step, step))
        null = torch.cat((torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)))
    for t, t_prev in scheduler.timesteps(steps):
        if guidance != 0:
            times = torch.full((2 * n,), t, dtype=torch.long)
            v_cond, v_null = denoiser_forward(denoiser, torch.cat((x, x)), times, cond, null=null,
                                              extra=extra, step=step).float().chunk(2)
            v = (1 + guidance) * v_cond - guidance * v_null
        else:
            times = torch.full((n,), t, dtype=torch.long)
            v = denoiser_forward(denoiser, x, times, cond, extra=extra, step=step).float()
        x = ddim_step(scheduler, v, t, t_prev, x)
    return x
