"""Ensemble sampling: members x guidance in one batch, one generator per member.

Member ``k`` of a request with seed ``s`` starts from noise drawn by a CPU ``torch.Generator``
seeded from ``(s, k)`` alone, and every network runs per sample (BatchNorm in eval mode), so
a member does not change when other members or requests share the batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from model.advection import ADVECTIONS, bulk_motion, from_moving_frame, to_moving_frame
from model.config import ENCODINGS, STLDMConfig
from model.denoiser import Denoiser, channels_last_frames
from model.detail import DETAILS, renewed_detail
from model.lagrangian import (
    dense_motion,
    displacements,
    from_lagrangian,
    laplace_from_uniform,
    member_displacements,
    to_lagrangian,
)
from model.matching import MATCHINGS, match_cdf
from model.pairs import mirrored
from model.scheduler import DDIMScheduler
from model.vae import VAE, reparameterise


def cfg(pred_cond: torch.Tensor, pred_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on v: ``(1 + w) * v_cond - w * v_uncond`` with w = ``scale``.

    ``scale = 0`` is the conditional prediction alone.
    """
    return (1 + scale) * pred_cond - scale * pred_uncond


def member_generator(seed: int, member: int, stream: str = "noise") -> torch.Generator:
    """A CPU generator whose state depends only on (seed, member, stream)."""
    digest = hashlib.blake2b(f"{seed}:{member}:{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def member_noise(shape: Sequence[int], seeds: Sequence[int], members: int,
                 stream: str = "noise") -> torch.Tensor:
    """(len(seeds), members, *shape) standard normal noise on the CPU, one generator each."""
    return torch.stack([
        torch.stack([torch.randn(tuple(shape), generator=member_generator(s, k, stream))
                     for k in range(members)])
        for s in seeds
    ])


def member_uniform(shape: Sequence[int], seeds: Sequence[int], members: int, stream: str) -> torch.Tensor:
    """(len(seeds), members, *shape) uniform draws in (0, 1), one generator per member and stream."""
    draws = [[torch.rand(tuple(shape), generator=member_generator(s, k, stream), dtype=torch.float64)
              for k in range(members)] for s in seeds]
    return torch.stack([torch.stack(row) for row in draws]).clamp(1e-12, 1 - 1e-12).float()


def guided_step(x: torch.Tensor, v_cond: torch.Tensor, v_null: torch.Tensor | None, a: float, b: float,
                scale: float) -> torch.Tensor:
    """``a * x + b * cfg(v_cond, v_null, scale)``: a DDIM step (:meth:`DDIMScheduler.step_coefficients`)
    on the guided v, in three passes over the latents; ``v_null`` None means no guidance.

    x, v_cond, v_null : (N, T, C, h, w) latents and v-predictions; returns a new tensor.
    """
    out = torch.mul(x, a).add_(v_cond, alpha=b * (1 + scale) if v_null is not None else b)
    return out if v_null is None else out.add_(v_null, alpha=-b * scale)


def guided_steps(steps: int, share: float) -> int:
    """How many of ``steps`` DDIM steps, the noisiest first, apply guidance: ``ceil(share * steps)``
    (``share`` in [0, 1]; 1 guides every step, as the paper). Guidance matters most where the
    noise is high and the members take their shapes; late steps refine what is there."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"guidance_share must be in [0, 1], got {share}")
    return min(steps, math.ceil(share * steps - 1e-9))


@torch.inference_mode()
def sample_latents(denoiser: Denoiser, scheduler: DDIMScheduler, cond: torch.Tensor,
                   noise: torch.Tensor, *, steps: int = 20, guidance: float = 1.0,
                   guidance_share: float = 1.0, extra: torch.Tensor | None = None,
                   step: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`ddim_latents` without autograd: the sampler of the service."""
    return ddim_latents(denoiser, scheduler, cond, noise, steps=steps, guidance=guidance,
                        guidance_share=guidance_share, extra=extra, step=step)


def ddim_latents(denoiser: Denoiser, scheduler: DDIMScheduler, cond: torch.Tensor,
                 noise: torch.Tensor, *, steps: int = 20, guidance: float = 1.0,
                 guidance_share: float = 1.0, extra: torch.Tensor | None = None,
                 step: torch.Tensor | None = None) -> torch.Tensor:
    """Run the DDIM loop (eta = 0) from ``noise`` under condition ``cond``; differentiable, so that
    training can score the members the sampler makes (:mod:`training.ensemble`).

    The condition is prepared for the denoiser once (:meth:`Denoiser.prepare`); each step runs
    the network on it and applies guidance and the DDIM update as :func:`guided_step`.

    Parameters
    ----------
    cond : (N, T, C, h, w) translator means, one row per ensemble member.
    noise : (N, T, C, h, w) initial latents x_T.
    steps : DDIM steps (20 in the paper).
    guidance : CFG scale w; when non-zero the conditional and null passes run as one batch.
    guidance_share : share of the steps, the noisiest first, that apply guidance
        (:func:`guided_steps`); the others run the conditional pass alone, at half the work.
    extra : (N, E, h, w), optional; extra condition channels (options), dropped with ``cond``
        in the null pass.
    step : (N,) minutes between frames, optional; for a model with a step embedding.

    Returns
    -------
    (N, T, C, h, w) predicted clean latents x0, stored as channels-last frames.
    """
    n = noise.shape[0]
    x = channels_last_frames(noise.float())  # the layout the denoiser returns: no conversion per step
    dtype = next(denoiser.parameters()).dtype  # a bfloat16 denoiser (model.precision) sees bfloat16
    cond = cond.to(dtype)
    extra = None if extra is None else extra.to(dtype)
    guided = guided_steps(steps, guidance_share) if guidance != 0 else 0
    single = None
    if guided < steps:
        single = denoiser.prepare(cond, x.to(dtype), extra=extra, step=step)
    if guided:
        null = torch.cat((torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)))
        prepared = denoiser.prepare(
            torch.cat((cond, cond)), torch.cat((x, x)).to(dtype), null=null.to(noise.device),
            extra=None if extra is None else torch.cat((extra, extra)),
            step=None if step is None else torch.cat((step, step)))
    for i, (t, t_prev) in enumerate(scheduler.timesteps(steps)):  # the DDIM updates stay in float32
        a, b = scheduler.step_coefficients(t, t_prev)
        if i < guided:
            times = torch.full((2 * n,), t, dtype=torch.long, device=x.device)
            v_cond, v_null = denoiser.run(torch.cat((x, x)).to(dtype), times, prepared).float().chunk(2)
            x = guided_step(x, v_cond, v_null, a, b, guidance)
        else:
            assert single is not None
            times = torch.full((n,), t, dtype=torch.long, device=x.device)
            x = guided_step(x, denoiser.run(x.to(dtype), times, single).float(), None, a, b, 0.0)
    return x


@dataclass
class Forecast:
    """members (B, K, T_out, H, W) and first_estimate (B, T_out, H, W), pixels in [0, 1]."""

    members: torch.Tensor
    first_estimate: torch.Tensor


class SamplerModel(Protocol):
    """What the sampler needs from a model: its config, its three networks and its schedule
    (:class:`model.stldm.STLDM` is one)."""

    @property
    def config(self) -> STLDMConfig: ...

    @property
    def vae(self) -> VAE: ...

    @property
    def translator(self) -> torch.nn.Module: ...

    @property
    def denoiser(self) -> Denoiser: ...

    @property
    def scheduler(self) -> DDIMScheduler: ...

    def extra_condition(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None: ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


def decode_frames(vae: VAE, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """(N, C, h, w) latents -> (N, H, W) pixels, decoded in chunks of ``chunk`` frames.

    The default chunk is 8 frames on a CPU, where the full-resolution activations of a few
    frames stay in cache (about 20 % faster than 64 frames per chunk at one thread), and 64
    frames elsewhere; chunks also bound the memory.
    """
    chunk = chunk or (8 if z.device.type == "cpu" else 64)
    return torch.cat([vae.decode(part)[:, 0] for part in z.split(chunk)])


def fading(leads: torch.Tensor, lifetime: float) -> torch.Tensor:
    """``exp(-lead / lifetime)`` for leads (T,) in minutes, shaped (1, 1, T, 1, 1) for members."""
    return torch.exp(-leads / lifetime)[None, None, :, None, None]


def blend_target(last: torch.Tensor, first: torch.Tensor, leads: torch.Tensor,
                 lifetime: float) -> torch.Tensor:
    """What the extrapolation blend goes to, (B, 1, T, H, W) for members: the last frame (B, H, W)
    at every lead, or with ``lifetime`` > 0 minutes ``v * last + (1 - v) * first`` at lead ``l``,
    ``v = exp(-l / lifetime)``, ``first`` (B, T, H, W) the translator's first estimate."""
    if lifetime <= 0:
        return last[:, None, None]
    v = fading(leads, lifetime)
    return v * last[:, None, None] + (1 - v) * first.to(last)[:, None]


def blend_members(members: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  spread: float = 0.0) -> torch.Tensor:
    """Lead ``l`` of every member towards ``target`` with weight ``w``:
    ``w * target + (1 - w) * mean + s * (member - mean)``, ``mean`` the ensemble mean.

    With ``s = 1 - w`` (``spread`` 0) this is the linear blend ``w * target + (1 - w) * member``,
    which shrinks the members' departures from their mean, and so the ensemble's spread, by
    ``1 - w``: almost nothing of it is left at the first leads, where ``w`` is near 1. With
    ``spread`` > 0, ``s = max(1 - w, spread * sqrt(1 - w ** 2))``: the mean is the same, and the
    departures are kept as an AR(1) process of lag correlation ``w`` keeps its innovations (the
    renewed detail and STEPS' cascade levels do the same), scaled by ``spread``. That is no
    longer a convex combination: the result can leave the pixels' [0, 1] (the caller clamps).

    Parameters
    ----------
    members : (B, K, T, H, W).
    target : (B, 1, 1, H, W) what the members start from (the last frame, in the forecast frame).
    weight : (1, 1, T, 1, 1) ``w`` by lead (:func:`fading`).
    spread : in [0, 1].

    Returns
    -------
    (B, K, T, H, W); ``members`` itself, blended in place, when ``spread`` is 0.
    """
    if spread <= 0:
        return members.lerp_(target.expand_as(members), weight)
    mean = members.mean(dim=1, keepdim=True)
    keep = torch.maximum(1 - weight, spread * (1 - weight.square()).sqrt())
    return weight * target + (1 - weight) * mean + keep * (members - mean)


@torch.inference_mode()
def forecast(model: SamplerModel, x: torch.Tensor, *, members: int = 10, steps: int = 20,
             guidance: float = 1.0, guidance_share: float = 1.0, seed: int | Sequence[int] = 0,
             encoding: str = "mean", autocast_dtype: torch.dtype | None = None, matching: str = "none",
             advection: str = "none", step_minutes: int | None = None,
             motion: torch.Tensor | None = None, motion_spread: float = 0.0,
             cell_km: float | None = None, detail_lifetime: float = 0.0, detail: str = "fade",
             extrapolation_lifetime: float = 0.0, blend_spread: float = 0.0,
             estimate_lifetime: float = 0.0, antithetic: bool = False) -> Forecast:
    """Sample an ensemble nowcast.

    Parameters
    ----------
    model : STLDM in eval mode.
    x : (B, T_in, H, W) input frames, pixels in [0, 1]; H, W multiples of
        ``model.config.size_multiple``.
    members : ensemble size K.
    steps : DDIM steps.
    guidance : CFG scale w (1.0 as in the paper; 0 skips the null pass).
    guidance_share : share of the DDIM steps, the noisiest first, that apply guidance
        (:func:`guided_steps`; 1.0 as in the paper); the rest skip the null pass.
    seed : one seed for all requests, or one per request (length B).
    encoding : "mean" (default) conditions on the encoder means of the inputs, so the only
        randomness is each member's initial noise; "sample" draws the input latents and the
        first estimate like the reference code (STLDM.md 7.2), from the request's seed.
    autocast_dtype : e.g. ``torch.bfloat16`` to run the networks under autocast.
    matching : "none" returns the decoded members as sampled; "cdf" gives every member and
        lead time the empirical distribution of the last input frame (probability matching as
        in pysteps STEPS, :func:`model.matching.match_cdf`); the first estimate stays raw.
    advection : "none" forecasts on the ground, as the paper; "bulk" forecasts in a frame that
        moves with the rain's mean motion estimated from ``x`` and moves the result back
        (:mod:`model.advection`); "dense" forecasts in the frame moving with a motion field
        and advects every lead back along it (:mod:`model.lagrangian`).
    motion : (B, 2, H, W) (x, y) cells per step, optional; the motion field of ``advection=
        "dense"`` (default: pysteps' dense Lucas-Kanade of ``x``).
    motion_spread : with ``advection="dense"``, scale of the member-wise motion perturbations
        (STEPS' ``bps``; 1.0: pysteps' sizes, 0: none); needs ``step_minutes`` and ``cell_km``.
    cell_km : grid spacing in km, for ``motion_spread``.
    detail_lifetime : minutes; when > 0, the detail of the last input frame that the VAE does not
        reproduce (its pixels minus the decoding of its latent, in the forecast frame) is added
        to every member and lead ``l`` minutes ahead with weight ``exp(-l / detail_lifetime)``,
        as Lagrangian persistence of what the latent model cannot represent (small cells, sharp
        edges); 0 returns the members as decoded.
    detail : how that detail enters the members: "fade" adds the same detail to every member with
        weight ``exp(-l / detail_lifetime)``; "renew" gives each member its own AR(1) process that
        starts from the detail and renews it with noise of its spectrum and local amplitude, with
        correlation ``exp(-l / detail_lifetime)`` (:mod:`model.detail`, as STEPS' small cascade
        levels), and the extrapolation blend below goes to the last frame's decoding, its detail
        being the process's.
    extrapolation_lifetime : minutes; when > 0, lead ``l`` of every member becomes ``w * x_last +
        (1 - w) * member`` in the forecast frame, ``w = exp(-l / extrapolation_lifetime)``, with
        ``x_last`` the last input frame there: Lagrangian persistence (an extrapolation nowcast
        once moved back) at short leads, where it is the better forecast, the model's members
        later, as pysteps blends extrapolation with a model by lead time; 0: the members alone.
    blend_spread : with ``extrapolation_lifetime``, how much of their own spread the members keep
        in that blend (:func:`blend_members`): their departures from the ensemble mean enter with
        weight ``max(1 - w, blend_spread * sqrt(1 - w ** 2))`` instead of ``1 - w``, so the
        ensemble spreads from the first leads on as an AR(1) process does; 0: ``1 - w``.
    estimate_lifetime : minutes; with ``extrapolation_lifetime``, when > 0 the blend's target at
        lead ``l`` is ``v * x_last + (1 - v) * first``, ``v = exp(-l / estimate_lifetime)``, with
        ``first`` the translator's decoded first estimate in the forecast frame: where the rain
        will be is taken more and more from the model's estimate than from the last frame as the
        lead grows (cdf matching then restores the amounts, which the smooth estimate loses);
        0: the last frame at every lead.
    antithetic : members in mirrored pairs (:mod:`model.pairs`): member ``2j + 1`` starts from
        the negated noise of member ``2j``, with its opposite motion perturbation and negated
        detail innovations; False: every member draws its own.
    step_minutes : minutes between the input frames (and the lead times), one of
        ``model.config.step_minutes`` for a model with a step embedding; None for a model
        without one.

    Returns
    -------
    Forecast with members (B, K, T_out, H, W) and the translator's decoded first estimate
    (B, T_out, H, W), pixels in [0, 1].
    """
    config = model.config
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if x.ndim != 4 or x.shape[1] != config.t_in:
        raise ValueError(f"x must be (B, {config.t_in}, H, W), got {tuple(x.shape)}")
    size = config.size_multiple
    if x.shape[-1] % size or x.shape[-2] % size:
        raise ValueError(f"frame sides must be multiples of {size}, got {tuple(x.shape[-2:])}")
    if matching not in MATCHINGS:
        raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    if advection not in ADVECTIONS:
        raise ValueError(f"advection must be one of {ADVECTIONS}, got {advection!r}")
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    guided_steps(steps, guidance_share)  # a bad share is refused before any work
    config.check_step(step_minutes)
    if motion_spread < 0:
        raise ValueError(f"motion_spread must be >= 0, got {motion_spread}")
    if detail_lifetime < 0:
        raise ValueError(f"detail_lifetime must be >= 0 minutes, got {detail_lifetime}")
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
    if extrapolation_lifetime < 0:
        raise ValueError(f"extrapolation_lifetime must be >= 0 minutes, got {extrapolation_lifetime}")
    if not 0 <= blend_spread <= 1:
        raise ValueError(f"blend_spread must be in [0, 1], got {blend_spread}")
    if estimate_lifetime < 0:
        raise ValueError(f"estimate_lifetime must be >= 0 minutes, got {estimate_lifetime}")
    b = x.shape[0]
    observed = x
    if advection == "bulk":
        shift = bulk_motion(x)
        x = to_moving_frame(x, shift)
    elif advection == "dense":
        if motion is None:
            motion = torch.from_numpy(np.stack([dense_motion(frames) for frames in x.float().cpu().numpy()]))
        if motion.shape != (b, 2, *x.shape[-2:]):
            raise ValueError(f"motion must be {(b, 2, *x.shape[-2:])}, got {tuple(motion.shape)}")
        motion = motion.float().to(x.device)
        x = to_lagrangian(x.float(), motion)
    seeds = [seed] * b if isinstance(seed, int) else list(seed)
    if len(seeds) != b:
        raise ValueError(f"seed must be an int or {b} ints, got {len(seeds)}")
    device = next(model.parameters()).device
    dtype = autocast_dtype or torch.float32
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        frames = x.to(device, torch.float32).reshape(-1, 1, *x.shape[-2:])
        mean, logvar = model.vae.encode(frames)
        latent_shape = mean.shape[1:]
        z = mean.float().reshape(b, config.t_in, *latent_shape)
        if encoding == "sample":
            eps = member_noise((config.t_in, *latent_shape), seeds, 1, "encode")[:, 0]
            z = reparameterise(z, logvar.float().reshape(z.shape), eps.to(device))
        step = None if step_minutes is None else torch.full((b,), float(step_minutes), device=device)
        mu, mu_logvar = (part.float() for part in model.translator(z, step))
        estimate = mu
        if encoding == "sample":
            eps = member_noise(mu.shape[1:], seeds, 1, "estimate")[:, 0]
            estimate = reparameterise(mu, mu_logvar, eps.to(device))
        first = decode_frames(model.vae, estimate.flatten(0, 1)).reshape(b, config.t_out, *x.shape[-2:])
        noise = member_noise(mu.shape[1:], seeds, members)  # (B, K, T, C, h, w)
        if antithetic:
            noise = mirrored(noise)
        noise = noise.to(device)
        cond = mu[:, None].expand(-1, members, *mu.shape[1:]).flatten(0, 1)
        extra = model.extra_condition(frames.reshape(b, config.t_in, *x.shape[-2:]), z)
        if extra is not None:  # (B, E, h, w) -> (B*K, E, h, w)
            extra = extra.float()[:, None].expand(-1, members, *extra.shape[1:]).flatten(0, 1)
        z0 = sample_latents(model.denoiser, model.scheduler, cond, noise.flatten(0, 1),
                            steps=steps, guidance=guidance, guidance_share=guidance_share, extra=extra,
                            step=None if step is None else step.repeat_interleave(members))
        out = decode_frames(model.vae, z0.flatten(0, 1))
    out = out.float().reshape(b, members, config.t_out, *x.shape[-2:])
    leads = (step_minutes or 5) * torch.arange(1, config.t_out + 1, device=out.device).float()  # minutes
    if detail_lifetime > 0:  # the input's detail the VAE does not reproduce
        last = decode_frames(model.vae, mean.float().reshape(b, config.t_in, *latent_shape)[:, -1])
        last = last.float().reshape(b, *x.shape[-2:])
        residual = x[:, -1].to(out) - last
    if detail_lifetime > 0 and detail == "renew":  # member by member, decorrelating with lead time
        if extrapolation_lifetime > 0:  # towards the last frame without its detail (the process carries it),
            # or its mix with the first estimate (blend_target)
            target = blend_target(last, first, leads, estimate_lifetime)
            out = blend_members(out, target, fading(leads, extrapolation_lifetime), blend_spread)
        generators = [member_generator(s, k, "detail") for s in seeds for k in range(members)]
        renewed = renewed_detail(residual, generators, leads=config.t_out,
                                 step_minutes=float(step_minutes or 5), lifetime=detail_lifetime,
                                 antithetic=antithetic)
        out = out.add_(renewed).clamp_(0, 1)
    else:
        if detail_lifetime > 0:  # the same in every member, fading with lead time
            out = out.addcmul_(fading(leads, detail_lifetime), residual[:, None, None]).clamp_(0, 1)
        if extrapolation_lifetime > 0:  # from Lagrangian persistence at short leads to the model's members
            target = blend_target(x[:, -1].to(out), first, leads, estimate_lifetime)
            out = blend_members(out, target, fading(leads, extrapolation_lifetime), blend_spread)
            if blend_spread > 0:  # departures wider than a convex blend's: back into the pixels' range
                out = out.clamp_(0, 1)
    first = first.float()
    if advection == "bulk":
        shift = shift.to(out.device)
        out, first = from_moving_frame(out, shift), from_moving_frame(first, shift)
    elif advection == "dense" and motion is not None:  # motion was estimated above when not given
        motion = motion.to(out.device)
        draws = None
        if motion_spread > 0:  # two Laplace draws per member from its own generator
            uniform = member_uniform((2,), seeds, members, "motion")
            if antithetic:
                uniform = mirrored(uniform, centre=0.5)
            draws = laplace_from_uniform(uniform).to(out.device)
        moves = member_displacements(motion, config.t_out, eps=draws, step_minutes=step_minutes,
                                     cell_km=cell_km, spread=motion_spread)
        out = from_lagrangian(out, moves.expand(b, members, *moves.shape[2:]))
        first = from_lagrangian(first[:, None], displacements(motion, config.t_out)[:, None])[:, 0]
    if matching == "cdf":
        out = match_cdf(out.flatten(1, 2), observed[:, -1].to(out)).reshape(out.shape)
    return Forecast(members=out, first_estimate=first)
